"""Run records: what each `twin retrain` did, as data_dir/runs/<started>.json.

Written by the retrain pipeline (twin.app.retrain), read by `twin status` and by the bot (its
reports and the nightly schedule), which is why they live at the bottom: reading a record must
not import the pipeline that writes it (trainer, Telethon).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from twin.core.files import ensure_private_dir, write_private_text

log = logging.getLogger(__name__)

RUNS_DIR = "runs"


@dataclass
class RunMetrics:
    """The trained adapter's headline numbers, copied into the record."""

    base_eval_loss: float
    eval_loss: float
    steps: int
    tokens_per_s: float
    seconds: float


@dataclass
class RunRecord:
    """What `twin retrain` did."""

    started: str  # UTC, "%Y%m%d-%H%M%S"
    outcome: str = "running"  # "promoted", "not promoted", "skipped" or "failed"
    reason: str = ""
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    messages_added: int = 0
    examples: int = 0
    dataset_sha256: str = ""
    # The dataset and every setting that shapes training, hashed: a run with the same key as
    # the last trained one would repeat it (same data, same seed, same outcome).
    training_key: str = ""
    adapter: str | None = None
    metrics: RunMetrics | None = None
    preference: str = ""  # what the preference stage did, one line (trainer.metrics)
    seconds: float = 0.0
    error: str | None = None

    def line(self) -> str:
        head = (
            f"retrain {self.outcome}: {self.messages_added} new messages, "
            f"{self.examples} examples, {self.seconds:.0f} s"
        )
        if self.metrics:
            head += (
                f"; held-out loss {self.metrics.base_eval_loss:.3f} (base) -> "
                f"{self.metrics.eval_loss:.3f} (adapter {self.adapter})"
            )
        return f"{head}; {self.reason}" if self.reason else head

    @property
    def trained(self) -> bool:
        return self.outcome in ("promoted", "not promoted")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        metrics = values.get("metrics")
        values["metrics"] = RunMetrics(**metrics) if metrics else None
        return cls(**values)


def write_record(data_dir: Path, record: RunRecord) -> Path:
    folder = ensure_private_dir(data_dir / RUNS_DIR)
    path = folder / f"{record.started}.json"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{record.started}-{n}.json"
    write_private_text(path, json.dumps(asdict(record), indent=1))
    return path


def read_records(data_dir: Path) -> list[RunRecord]:
    """Every run's record, oldest first; a damaged record file is skipped with a warning."""
    folder = data_dir / RUNS_DIR
    if not folder.is_dir():
        return []
    records = []
    for path in sorted(folder.glob("[0-9]*.json"), key=_run_order):
        try:
            records.append(RunRecord.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, AttributeError) as err:
            log.warning("run record %s is unreadable (%s): skipped", path.name, type(err).__name__)
    return records


def _run_order(path: Path) -> tuple[str, int]:
    # "20261125-030000.json", then "20261125-030000-2.json" for a second run in that second
    parts = path.stem.split("-")
    return "-".join(parts[:2]), int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 1
