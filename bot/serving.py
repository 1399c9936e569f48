"""The served twin: the base model with the current adapter, and the persona prompt.

Used by `twin chat` and by the bot's model worker, which also swaps adapters while serving.
Each version is loaded under its own adapter name (reusing a name can leave stale weights
behind) and the previous one is deleted after the switch. An adapter is checked against the
served base (its recorded base model, every LoRA matrix's shape, finite weights) before it
touches the model, so a broken one is refused and the old one keeps serving.

In full precision (fp32) the adapter is merged into the base weights, which makes the twin
as fast as the base; swapping unmerges the old one first. Merging into 4-bit or half-precision
weights would round the learned deltas away (and unmerging would not restore the base
exactly), so there the adapter stays unmerged.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ingest.dataset import persona_prompt
from ingest.store import open_store
from trainer.model import LoadPlan, base_checkpoint, load_base_model, load_plan, load_tokenizer
from trainer.registry import current_version
from twin.config import Config
from twin.errors import TwinError

log = logging.getLogger(__name__)


class AdapterRefused(TwinError):
    """An adapter that cannot be served on this base; the message says why."""


@dataclass
class ServedTwin:
    model: Any
    tokenizer: Any
    version: str | None  # None: the base model, no adapter yet
    system_prompt: str
    checkpoint: str  # the base, as given to from_pretrained
    plan: LoadPlan

    @property
    def merged(self) -> bool:
        return self.version is not None and _merges(self.plan)


def load_served_twin(config: Config, *, with_adapter: bool = True) -> ServedTwin:
    """Load the base and, when there is one, the current adapter."""
    checkpoint = base_checkpoint(config)
    plan = load_plan(config)
    tokenizer = load_tokenizer(checkpoint)
    model = load_base_model(checkpoint, plan)
    twin = ServedTwin(model, tokenizer, None, served_prompt(config), checkpoint, plan)
    version = current_version(config.adapters_dir) if with_adapter else None
    if version is not None:
        swap_adapter(twin, config.adapters_dir / version)
    log.info("serving %s", f"adapter {version}" if version else "the base model (no adapter yet)")
    return twin


def served_prompt(config: Config) -> str:
    """The persona system prompt, exactly as the dataset wrote it into training examples."""
    owner = None
    if config.store_path.exists():
        with open_store(config.store_path) as store:
            owner = store.owner()
    return persona_prompt(config, owner)


def swap_adapter(twin: ServedTwin, folder: Path) -> None:
    """Serve the adapter in `folder` instead of the current one (or the bare base).

    Raises AdapterRefused, with the model untouched, when the adapter does not fit the base.
    """
    version = folder.name
    if version == twin.version:
        return
    check_adapter(twin, folder)
    from peft import PeftModel

    model = twin.model
    old = twin.version
    if twin.merged:
        model.unmerge_adapter()
    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=version)
        model.set_adapter(version)
    else:
        model = PeftModel.from_pretrained(model, str(folder), adapter_name=version)
    if old is not None and old != version:
        model.delete_adapter(old)
    if _merges(twin.plan):
        model.merge_adapter([version])
    model.eval()
    twin.model, twin.version = model, version


def check_adapter(twin: ServedTwin, folder: Path) -> None:
    """Refuse an adapter that does not fit the served base, before it touches the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        settings = json.loads((folder / "adapter_config.json").read_text())
        state = load_file(str(folder / "adapter_model.safetensors"))
    except (OSError, ValueError, SafetensorError) as err:
        raise AdapterRefused(f"adapter {folder.name} cannot be read: {err}") from None
    recorded = str(settings.get("base_model_name_or_path") or "")
    if not _same_base(recorded, twin.checkpoint):
        raise AdapterRefused(
            f"adapter {folder.name} was trained on {recorded!r}, not the served {twin.checkpoint!r}"
        )
    base = twin.model.get_base_model() if hasattr(twin.model, "get_base_model") else twin.model
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise AdapterRefused(f"adapter {folder.name} has non-finite weights in {key}")
        _check_shape(base, key, tensor, folder.name)
    if not state:
        raise AdapterRefused(f"adapter {folder.name} has no weights")


def _check_shape(base: Any, key: str, tensor: torch.Tensor, version: str) -> None:
    for part, axis in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
        if not key.endswith(part):
            continue
        name = key.removeprefix("base_model.model.").removesuffix(part)
        try:
            module = base.get_submodule(name)
        except AttributeError:
            raise AdapterRefused(f"adapter {version} adapts {name}, which the base lacks") from None
        linear = getattr(module, "base_layer", module)
        expected = linear.in_features if axis == 1 else linear.out_features
        if tensor.shape[axis] != expected:
            raise AdapterRefused(
                f"adapter {version} does not fit the base: {key} has shape "
                f"{tuple(tensor.shape)}, the layer has {expected} features"
            )


def _same_base(recorded: str, served: str) -> bool:
    """Whether an adapter's recorded base is the served one. A local base may have moved with
    its data dir, so local folders compare by folder name."""
    if recorded == served:
        return True
    recorded_path, served_path = Path(recorded), Path(served)
    return (
        recorded_path.is_absolute() or served_path.exists()
    ) and recorded_path.name == served_path.name


def _merges(plan: LoadPlan) -> bool:
    return not plan.quantized and plan.dtype == torch.float32
