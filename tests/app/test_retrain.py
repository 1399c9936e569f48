"""`twin retrain`: ingest -> dataset -> train -> promote, skipped when nothing is new, one at a
time, and a record of every run."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.bot.helpers import retrain_config
from trainer import registry
from twin.app.cli import main
from twin.app.retrain import retrain
from twin.app.status import status_of
from twin.core.errors import TwinError
from twin.core.lock import WRITE_LOCK
from twin.core.overrides import save_override, with_override
from twin.core.runs import read_records


def test_retrain_promotes_then_skips_until_something_changes(
    tmp_path: Path, tiny_base: Path
) -> None:
    config = retrain_config(tmp_path, tiny_base)
    first = retrain(config)
    assert first.outcome == "promoted"
    assert first.messages_added == 747 and first.examples > 50
    assert set(first.stages) == {"ingest", "dataset", "train"}
    assert registry.current_version(config.adapters_dir) == first.adapter
    assert first.metrics is not None
    assert first.metrics.eval_loss < first.metrics.base_eval_loss

    again = retrain(config)  # the export re-read adds nothing: same dataset, no training
    assert again.outcome == "skipped" and again.messages_added == 0
    assert "nothing new since adapter" in again.reason
    assert "train" not in again.stages

    forced = retrain(config, force=True)
    assert forced.outcome in ("promoted", "not promoted") and forced.adapter != first.adapter

    # A new persona prompt changes every example: the twin must learn it, not skip.
    config = with_override(config, "persona", "system_prompt", "You are {name}. Be brief.")
    save_override(config, "persona", "system_prompt")
    assert retrain(config).outcome != "skipped"

    records = read_records(config.data_dir)
    assert status_of(config)["last_run"]["started"] == records[-1].started
    assert [r.outcome for r in records][:2] == ["promoted", "skipped"]
    assert len(records) == 4
    assert records[0].dataset_sha256 == records[1].dataset_sha256 != records[3].dataset_sha256


def test_a_rejected_run_is_not_repeated_night_after_night(tmp_path: Path, tiny_base: Path) -> None:
    config = retrain_config(tmp_path, tiny_base)
    assert retrain(config).outcome == "promoted"
    # A setting that makes a worse adapter: the gate rejects it.
    config = config.with_section("train", learning_rate=1e-9)
    rejected = retrain(config, force=True)
    assert rejected.outcome == "not promoted"
    # Next night, nothing new: the same data, settings and seed would only repeat it.
    again = retrain(config)
    assert again.outcome == "skipped" and "train" not in again.stages
    assert f"whose adapter {rejected.adapter} was not promoted" in again.reason
    assert "more history" in again.reason and "max_steps" in again.reason
    # Change what shapes training, and it trains again.
    assert retrain(config.with_section("train", max_steps=8)).outcome != "skipped"


def test_retrain_refuses_while_another_runs_and_takes_over_when_it_is_killed(
    tmp_path: Path, tiny_base: Path
) -> None:
    config = retrain_config(tmp_path, tiny_base)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path\n"
            "from twin.core.lock import data_dir_lock\n"
            "with data_dir_lock(Path(sys.argv[1]), 'twin retrain'):\n"
            "    print('locked', flush=True); time.sleep(60)",
            str(config.data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(TwinError, match=rf"in use by `twin retrain` \(pid {holder.pid}\)"):
        retrain(config)
    assert main(["--config", str(config.source), "retrain"]) == 1
    assert read_records(config.data_dir) == []  # refused runs did nothing
    holder.kill()
    holder.wait()
    assert retrain(config).outcome == "promoted"
    assert (config.data_dir / WRITE_LOCK).read_text() == ""  # released cleanly


def test_failing_stage_is_recorded_and_reported(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = retrain_config(tmp_path, tiny_base, exports=["missing/result.json"])
    assert main(["--config", str(config.source), "retrain"]) == 1
    assert "missing/result.json" in capsys.readouterr().err.strip().splitlines()[-1]
    (record,) = read_records(config.data_dir)
    assert record.outcome == "failed"
    assert record.reason.startswith("failed in ingest")
    assert record.error is not None and "missing/result.json" in record.error
    assert json.dumps(asdict(record))  # machine-readable as written


def test_retrain_keeps_the_memory_index_up_to_date(tmp_path: Path, tiny_base: Path) -> None:
    from ingest.memory import open_memory
    from ingest.recall import memory_path

    config = retrain_config(tmp_path, tiny_base, memory={"enabled": True})
    assert retrain(config).outcome == "promoted"
    with open_memory(memory_path(config)) as index:
        indexed = index.count()
    assert indexed > 100  # Mira's words, to be recalled from the next reply on
    assert memory_path(config).stat().st_mode & 0o777 == 0o600
    again = retrain(config)  # nothing new: nothing indexed again, nothing trained
    assert again.outcome == "skipped"
    with open_memory(memory_path(config)) as index:
        assert index.count() == indexed
