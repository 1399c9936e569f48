"""`twin retrain`: the whole refresh in one command, run nightly by `twin serve` or by hand.

Ingest (every export listed in `[ingest] exports`, re-read idempotently, and a Telethon pull
when this machine is logged in), rebuild the dataset, train, evaluate and promote.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.store import open_store
from trainer.train import TrainResult, train
from twin.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainResult:
    messages_added: int
    examples: int
    train: TrainResult

    def line(self) -> str:
        return f"{self.messages_added} new messages, {self.examples} examples; {self.train.line()}"


def can_pull(config: Config) -> bool:
    """A pull runs unattended only with credentials and an existing login (session file)."""
    session = config.data_dir / "telegram.session"
    has_credentials = bool(os.environ.get("TWIN_API_ID") and os.environ.get("TWIN_API_HASH"))
    return has_credentials and session.exists() and session.stat().st_size > 0


def retrain(config: Config) -> RetrainResult:
    added = 0
    with open_store(config.store_path) as store:
        before = store.count_messages()
        for export in config.ingest.exports:
            log.info("re-reading %s", export)
            import_export(export, store, me=config.identity.me)
    if can_pull(config):
        from ingest.telegram import run_pull

        log.info("pulling new messages from Telegram")
        run_pull(config)
    with open_store(config.store_path) as store:
        added = store.count_messages() - before
        dataset = build_dataset(config, store)
    result = train(config)
    return RetrainResult(added, dataset.train + dataset.eval, result)
