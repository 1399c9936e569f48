"""Checks every engine runs before an adapter touches what it serves: readable, finite, and
trained on the served base. (Each engine then checks shapes against its own form of the base.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.engine import AdapterRefused


def read_adapter(folder: Path, served_checkpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The adapter's config (its adapter_config.json) and weights (torch tensors by name), or
    AdapterRefused."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
        state = load_file(str(folder / "adapter_model.safetensors"))
    except (OSError, ValueError, SafetensorError) as err:
        raise AdapterRefused(f"adapter {folder.name} cannot be read: {err}") from None
    recorded = str(adapter_config.get("base_model_name_or_path") or "")
    if not same_base(recorded, served_checkpoint):
        raise AdapterRefused(
            f"adapter {folder.name} was trained on {recorded!r}, not the served "
            f"{served_checkpoint!r}"
        )
    if not state:
        raise AdapterRefused(f"adapter {folder.name} has no weights")
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all():
            raise AdapterRefused(f"adapter {folder.name} has non-finite weights in {key}")
    return adapter_config, state


def same_base(recorded: str, served: str) -> bool:
    """Whether an adapter's recorded base is the served one. A local base may have moved with
    its data dir (or the model cache), so local folders compare by folder name."""
    if recorded == served:
        return True
    recorded_path, served_path = Path(recorded), Path(served)
    return (
        recorded_path.is_absolute() or served_path.exists()
    ) and recorded_path.name == served_path.name
