"""`twin retrain`: the whole refresh in one command, run nightly by `twin serve` or by hand.

    ingest   every export in `[ingest] exports` (re-read, idempotent), and a Telethon pull
             when this machine is logged in (TWIN_API_ID / TWIN_API_HASH and a session)
    dataset  rebuilt from the store
    train    fine-tune, evaluate on held-out data, promote through the gate

Training is skipped when the dataset is exactly the one the adapter in use learned from
(same hash: nothing new, no setting changed), unless forced. One run at a time: a lock in the
data dir (an flock, so a run that dies releases it; a stale lock file is taken over).
Every run leaves a record in data_dir/runs/<time>.json, failed runs included.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.store import open_store
from ingest.telegram import can_pull_unattended, run_pull
from trainer import registry
from trainer.train import train
from twin.config import Config
from twin.errors import TwinError
from twin.files import ensure_private_dir, make_private_file, write_private_text

log = logging.getLogger(__name__)

LOCK_FILE = "retrain.lock"
RUNS_DIR = "runs"


@dataclass
class RunRecord:
    """What `twin retrain` did, as written to data_dir/runs/<started>.json."""

    started: str
    outcome: str = "running"  # "promoted", "not promoted", "skipped" or "failed"
    reason: str = ""
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    messages_added: int = 0
    examples: int = 0
    dataset_sha256: str = ""
    adapter: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None

    def line(self) -> str:
        head = (
            f"retrain {self.outcome}: {self.messages_added} new messages, "
            f"{self.examples} examples, {self.seconds:.0f} s"
        )
        if self.metrics:
            head += (
                f"; held-out loss {self.metrics['base_eval_loss']:.3f} (base) -> "
                f"{self.metrics['eval_loss']:.3f} (adapter {self.adapter})"
            )
        return f"{head}; {self.reason}" if self.reason else head


def retrain(config: Config, *, force: bool = False) -> RunRecord:
    """Run the refresh under the lock; the record is written whatever happens."""
    with retrain_lock(config.data_dir):
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
            import_export(export, store, me=config.identity.me)
        if can_pull_unattended(config):
            log.info("pulling new messages from Telegram")
            run_pull(config, interactive=False)
        record.messages_added = store.count_messages() - before
    with _stage(record, "dataset"), open_store(config.store_path) as store:
        dataset = build_dataset(config, store)
    record.examples = dataset.train + dataset.eval
    record.dataset_sha256 = dataset.sha256
    current = registry.current_version(config.adapters_dir)
    if current is not None and not force:
        learned = registry.read_metrics(config.adapters_dir / current).get("dataset", {})
        if learned.get("sha256") == dataset.sha256:
            record.outcome = "skipped"
            record.adapter = current
            record.reason = f"nothing new since adapter {current} (use --force to train anyway)"
            return
    with _stage(record, "train"):
        result = train(config)
    record.adapter = result.version
    record.metrics = {
        key: result.metrics[key]
        for key in ("base_eval_loss", "eval_loss", "steps", "tokens_per_s", "seconds")
    }
    record.outcome = "promoted" if result.promoted else "not promoted"
    record.reason = result.reason


@contextlib.contextmanager
def _stage(record: RunRecord, name: str) -> Iterator[None]:
    log.info("retrain: %s", name)
    started = time.perf_counter()
    record.stages[name] = 0.0
    try:
        yield
    finally:
        record.stages[name] = round(time.perf_counter() - started, 3)


@contextlib.contextmanager
def retrain_lock(data_dir: Path) -> Iterator[None]:
    """Hold the retrain lock, or raise TwinError naming the run that holds it.

    The kernel drops an flock when its process dies, so a lock file left by a killed run is
    not locked: the next run takes it over (and says so).
    """
    ensure_private_dir(data_dir)
    path = data_dir / LOCK_FILE
    make_private_file(path)
    with path.open("r+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "unknown"
            raise TwinError(f"another retrain is running ({holder}); it holds {path}") from None
        previous = handle.read().strip()
        if previous:
            log.warning("taking over the retrain lock left by a run that died (%s)", previous)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()  # an empty file: released cleanly
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_record(data_dir: Path, record: RunRecord) -> Path:
    folder = ensure_private_dir(data_dir / RUNS_DIR)
    path = folder / f"{record.started}.json"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{record.started}-{n}.json"
    write_private_text(path, json.dumps(asdict(record), indent=1))
    return path


def read_records(data_dir: Path) -> list[dict[str, Any]]:
    """Every run's record, oldest first."""
    folder = data_dir / RUNS_DIR
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("[0-9]*.json"), key=_run_order)]


def _run_order(path: Path) -> tuple[str, int]:
    # "20261125-030000.json", then "20261125-030000-2.json" for a second run in that second
    day, clock, *n = path.stem.split("-")
    return f"{day}-{clock}", int(n[0]) if n else 1
