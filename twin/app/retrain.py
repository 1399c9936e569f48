"""`twin retrain`: the whole refresh in one command, run nightly by `twin serve` or by hand.

    ingest   every export in `[ingest] exports` (re-read, idempotent), and a Telethon pull
             when this machine is logged in (TWIN_API_ID / TWIN_API_HASH and a session)
    dataset  rebuilt from the store
    train    fine-tune, then the preference stage on the owner's corrections (bot.db) and
             history, evaluate on held-out data, promote through the gate

Training is skipped when the dataset and the corrections are exactly those the adapter in use
learned from (same training key: nothing new, no setting changed), unless forced. One writer
at a time: the run holds the data dir's lock (twin.core.lock) through all its stages, so a
`twin train` or another retrain meanwhile is refused, naming this one. Every run leaves a
record in data_dir/runs/<time>.json, failed runs included.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.store import open_store
from ingest.telegram import can_pull_unattended, run_pull
from ingest.voice import voice_for
from trainer import registry
from trainer.train import train, training_key
from twin.app.corrections import learned_from, read_corrections
from twin.core.config import Config
from twin.core.lock import data_dir_lock
from twin.core.runs import RunMetrics, RunRecord, read_records, write_record

log = logging.getLogger(__name__)


def retrain(config: Config, *, force: bool = False) -> RunRecord:
    """Run the refresh under the data dir's lock; the record is written whatever happens."""
    with data_dir_lock(config.data_dir, "twin retrain"):
        record = RunRecord(started=time.strftime("%Y%m%d-%H%M%S", time.gmtime()))
        began = time.perf_counter()
        try:
            _run_stages(config, record, force)
        except BaseException as err:
            record.outcome = "failed"
            record.error = f"{type(err).__name__}: {err}".strip()
            record.reason = f"failed in {next(reversed(record.stages), 'start')}: {record.error}"
            raise
        finally:
            record.seconds = time.perf_counter() - began
            write_record(config.data_dir, record)
    return record


def _run_stages(config: Config, record: RunRecord, force: bool) -> None:
    with _stage(record, "ingest"), open_store(config.store_path) as store:
        before = store.count_messages()
        for export in config.ingest.exports:
            log.info("re-reading %s", export)
            summary = import_export(
                export, store, me=config.identity.me, voice=lambda s: voice_for(config, s)
            )
            log.info("%s", summary.line())
        if can_pull_unattended(config):
            log.info("pulling new messages from Telegram")
            run_pull(config, interactive=False)
        record.messages_added = store.count_messages() - before
    with _stage(record, "dataset"), open_store(config.store_path) as store:
        dataset = build_dataset(config, store)
    corrections = read_corrections(config)
    record.examples = dataset.train + dataset.eval
    record.dataset_sha256 = dataset.sha256
    record.training_key = training_key(config, dataset.sha256, corrections)
    if not force and (why := _nothing_would_change(config, record)):
        record.outcome = "skipped"
        record.reason = why
        return
    with _stage(record, "train"):
        result = train(config, progress=False, corrections=corrections)
    assert result is not None  # a retrain runs in one process
    learned_from(config, result)
    m = result.metrics
    if m.preference is not None:
        record.preference = m.preference.line()
    record.adapter = result.version
    record.metrics = RunMetrics(
        base_eval_loss=m.base_eval_loss,
        eval_loss=m.eval_loss,
        steps=m.run.steps,
        tokens_per_s=m.run.tokens_per_s,
        seconds=m.seconds,
    )
    record.outcome = "promoted" if result.promoted else "not promoted"
    record.reason = result.reason


def _nothing_would_change(config: Config, record: RunRecord) -> str | None:
    """Why training now would only repeat an earlier run (same data, config and seed, so
    the same adapter and the same verdict), or None when it is worth running."""
    current = registry.current_version(config.adapters_dir)
    if current is not None:
        learned = registry.read_metrics(config.adapters_dir / current)
        same = (
            learned.training_key == record.training_key
            if learned.training_key
            else learned.dataset.sha256 == record.dataset_sha256  # adapters before keys
        )
        if same:
            record.adapter = current
            return f"nothing new since adapter {current} (use --force to train anyway)"
    trained = [r for r in read_records(config.data_dir) if r.trained]
    last = trained[-1] if trained else None
    if (
        last is not None
        and last.outcome == "not promoted"
        and last.training_key == record.training_key
    ):
        return (
            f"same history and settings as the run of {last.started}, whose adapter "
            f"{last.adapter} was not promoted ({last.reason}); training again would repeat it. "
            "What changes the outcome: more history (new messages arrive by themselves), more "
            "steps ([train] max_steps), another learning rate, or the gate's [eval] settings"
        )
    return None


@contextlib.contextmanager
def _stage(record: RunRecord, name: str) -> Iterator[None]:
    log.info("retrain: %s", name)
    started = time.perf_counter()
    record.stages[name] = 0.0
    try:
        yield
    finally:
        record.stages[name] = round(time.perf_counter() - started, 3)
