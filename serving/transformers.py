"""The transformers engine: the base model and its LoRA adapter in this process.

Each version is loaded under its own adapter name (reusing a name can leave stale weights
behind) and the previous one is deleted after the switch. In full precision (fp32) the adapter
is merged into the base weights, which makes the twin as fast as the base; swapping unmerges
the old one first. Merging into 4-bit or half-precision weights would round the learned deltas
away (and unmerging would not restore the base exactly), so there the adapter stays unmerged.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from serving.checks import read_adapter
from serving.engine import AdapterRefused
from trainer.generation import generate_replies
from trainer.model import Base, LoadPlan, load_base
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage


class TransformersEngine:
    def __init__(self, base: Base) -> None:
        self.model: Any = base.model
        self.tokenizer: Any = base.tokenizer
        self.checkpoint = base.checkpoint
        self.plan: LoadPlan = base.plan
        self.version: str | None = None

    @classmethod
    def load(cls, config: Config) -> TransformersEngine:
        return cls(load_base(config))

    @property
    def merged(self) -> bool:
        return self.version is not None and _merges(self.plan)

    def generate(
        self,
        conversations: list[list[ChatMessage]],
        generation: GenerationConfig,
        *,
        stop: threading.Event | None = None,
        chats: list[str | None] | None = None,  # no cache is kept between calls here
    ) -> list[str]:
        return generate_replies(self.model, self.tokenizer, conversations, generation, stop=stop)

    @contextlib.contextmanager
    def without_adapter(self) -> Iterator[None]:
        """The bare base answers meanwhile (the eval's "base" column)."""
        if self.version is None:
            yield
            return
        with self.model.disable_adapter():
            yield

    def swap(self, folder: Path) -> None:
        version = folder.name
        if version == self.version:
            return
        self._check_shapes(folder)
        from peft import PeftModel

        model = self.model
        old = self.version
        if self.merged:
            model.unmerge_adapter()
        if isinstance(model, PeftModel):
            model.load_adapter(str(folder), adapter_name=version, is_trainable=False)
            # inference_mode: without it set_adapter makes the served adapter trainable again.
            model.set_adapter(version, inference_mode=True)
        else:
            model = PeftModel.from_pretrained(model, str(folder), adapter_name=version)
        if old is not None and old != version:
            model.delete_adapter(old)
        if _merges(self.plan):
            model.merge_adapter([version])
        model.eval()
        self.model, self.version = model, version

    def close(self) -> None:
        self.model = None

    def _check_shapes(self, folder: Path) -> None:
        """Refuse an adapter that does not fit the served base, before it touches the model."""
        _, state = read_adapter(folder, self.checkpoint)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        for key, tensor in state.items():
            _check_shape(base, key, tensor, folder.name)


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


def _merges(plan: LoadPlan) -> bool:
    return not plan.quantized and plan.dtype == torch.float32
