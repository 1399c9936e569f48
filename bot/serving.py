"""The served twin: the base model with the current adapter, and the persona prompt.

Used by `twin chat` now and by the bot's model worker.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ingest.dataset import persona_prompt
from ingest.store import open_store
from trainer.model import base_checkpoint, load_base_model, load_plan, load_tokenizer
from trainer.registry import current_version
from twin.config import Config

log = logging.getLogger(__name__)


@dataclass
class ServedTwin:
    model: Any
    tokenizer: Any
    version: str | None  # None: the base model, no adapter yet
    system_prompt: str


def load_served_twin(config: Config) -> ServedTwin:
    """Load the base and, when there is one, the current adapter (merged when it is safe)."""
    checkpoint = base_checkpoint(config)
    plan = load_plan(config)
    tokenizer = load_tokenizer(checkpoint)
    model = load_base_model(checkpoint, plan)
    version = current_version(config.adapters_dir)
    if version is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(
            model, str(config.adapters_dir / version), adapter_name=version
        )
        if not plan.quantized:
            # Merging into full-precision weights makes the twin as fast as the base; merging
            # into 4-bit weights would round the learned deltas away, so those stay separate.
            model = model.merge_and_unload()
        model.eval()
    store_path = config.store_path
    owner = None
    if store_path.exists():
        with open_store(store_path) as store:
            owner = store.owner()
    log.info("serving %s", f"adapter {version}" if version else "the base model (no adapter yet)")
    return ServedTwin(model, tokenizer, version, persona_prompt(config, owner))
