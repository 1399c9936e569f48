"""Training with the tiny model: registration, the gate, crashes, resume, retention."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import twin_command
from tests.trainer.helpers import (
    REPLIES,
    dead_tag,
    fake_metrics,
    make_config,
)
from trainer import registry
from trainer.train import train
from twin.app.cli import main
from twin.core.files import owner_tag


def test_train_registers_a_better_adapter_as_current(tmp_path: Path, tiny_base: Path) -> None:
    config = make_config(tmp_path, tiny_base)
    result = train(config)
    assert result is not None
    m = result.metrics
    assert result.promoted and m.gate is not None and m.gate.promote
    assert m.eval_loss < m.base_eval_loss
    assert m.eval_ppl < m.base_eval_ppl
    assert m.run.steps == 12 and m.run.tokens_per_s > 0 and m.run.peak_memory_mb > 0
    assert len(m.samples) == 2 and m.samples[0].real in REPLIES
    assert m.dataset.train == 24 and len(m.dataset.sha256) == 64
    assert registry.read_metrics(result.path) == m  # what metrics.json holds, read back
    assert registry.current_version(config.adapters_dir) == result.version
    files = {p.name for p in result.path.iterdir()}
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "metrics.json",
        "train_config.json",
    } <= files
    adapter_config = json.loads((result.path / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_base)
    assert not (config.data_dir / "checkpoints").exists()
    assert "held-out loss" in result.line() and "promoted to current" in result.line()


def test_gate() -> None:
    gate = registry.promotion_gate
    assert gate(fake_metrics(2.0), None, 0.02).promote
    assert not gate(fake_metrics(3.0), None, 0.02).promote
    assert not gate(fake_metrics(3.5), None, 0.02).promote
    current = fake_metrics(2.0)
    assert gate(fake_metrics(2.01), current, 0.02).promote
    decision = gate(fake_metrics(2.05), current, 0.02)
    assert not decision.promote and "worse than the current adapter" in decision.reason


def _fake_adapter(adapters_dir: Path, version: str, eval_loss: float, promote: bool) -> None:
    def write(folder: Path) -> None:
        (folder / "adapter_model.safetensors").write_bytes(b"weights")
        metrics = fake_metrics(eval_loss, promote=promote)
        (folder / "metrics.json").write_text(json.dumps(metrics.to_json()))

    registry.write_adapter(adapters_dir, version, write)
    if promote:
        registry.set_current(adapters_dir, version)


def test_rejected_adapter_stays_listed_as_rejected(tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    _fake_adapter(adapters, "20261101-030000", 2.0, True)
    _fake_adapter(adapters, "20261102-030000", 2.9, False)
    states = {a.version: a.state for a in registry.list_adapters(adapters)}
    assert states == {"20261101-030000": "current", "20261102-030000": "rejected"}


def test_crash_while_writing_or_switching_leaves_current_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapters = tmp_path / "adapters"
    _fake_adapter(adapters, "20261101-030000", 2.0, True)

    def crash_midway(folder: Path) -> None:
        (folder / "adapter_model.safetensors").write_bytes(b"half")
        raise MemoryError("killed while saving")

    with pytest.raises(MemoryError):
        registry.write_adapter(adapters, "20261102-030000", crash_midway)
    assert [a.version for a in registry.list_adapters(adapters)] == ["20261101-030000"]
    assert not list(adapters.glob(".tmp-*"))  # an error cleans up after itself
    _fake_adapter(adapters, "20261103-030000", 1.9, False)
    real_replace = os.replace

    def crash_on_pointer(src: Any, dst: Any) -> None:
        if str(dst).endswith(registry.CURRENT):
            raise OSError("power cut before the pointer switch")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_pointer)
    with pytest.raises(OSError):
        registry.set_current(adapters, "20261103-030000")
    monkeypatch.undo()
    assert registry.current_version(adapters) == "20261101-030000"


@contextlib.contextmanager
def _another_run() -> Iterator[str]:
    """The owner tag of a live process other than this one (a run going on beside ours)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        yield owner_tag(child.pid)
    finally:
        child.kill()
        child.wait()


def test_sweep_removes_only_what_dead_runs_left(tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    _fake_adapter(adapters, "20261101-030000", 2.0, True)
    with _another_run() as alive:
        dead = adapters / f".tmp-20261102-030000.{dead_tag()}"  # what a SIGKILL leaves
        legacy = adapters / ".tmp-20261103-030000"  # left by a version before owner tags
        writing = adapters / f".tmp-20261104-030000.{alive}"  # another run, half written
        for folder in (dead, legacy, writing):
            folder.mkdir()
            (folder / "adapter_model.safetensors").write_bytes(b"half")
        assert registry.sweep_incomplete(adapters) == 2
        assert not dead.exists() and not legacy.exists()
        assert (writing / "adapter_model.safetensors").read_bytes() == b"half"
    assert [a.version for a in registry.list_adapters(adapters)] == ["20261101-030000"]


def test_two_registrations_in_one_second_get_two_versions(tmp_path: Path) -> None:
    config = make_config(tmp_path, tmp_path)
    inside, go_on = threading.Event(), threading.Event()
    first: list[registry.Registered] = []

    def slow_weights(folder: Path) -> None:
        (folder / "adapter_model.safetensors").write_bytes(b"first")
        inside.set()
        assert go_on.wait(60)

    def register_first() -> None:
        first.append(registry.register_adapter(config, fake_metrics(2.0), slow_weights))

    def quick_weights(folder: Path) -> None:
        (folder / "adapter_model.safetensors").write_bytes(b"second")

    thread = threading.Thread(target=register_first)
    thread.start()
    try:
        assert inside.wait(60)
        # The same `created` second as the first, which is still writing its weights.
        second = registry.register_adapter(config, fake_metrics(2.1), quick_weights)
    finally:
        go_on.set()
        thread.join()
    assert first, "the first registration failed"
    assert first[0].version != second.version
    assert {first[0].version, second.version} == {"19700101-000000", "19700101-000000-2"}
    for registered, weights in ((first[0], b"first"), (second, b"second")):
        assert (registered.path / "adapter_model.safetensors").read_bytes() == weights
        assert registry.read_metrics(registered.path).version == registered.version
    assert len(registry.list_adapters(config.adapters_dir)) == 2


def test_retention_keeps_newest_and_never_the_current(tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    _fake_adapter(adapters, "20261101-030000", 1.0, True)  # old, but current
    for day in range(2, 7):
        _fake_adapter(adapters, f"202611{day:02d}-030000", 2.0, False)
    removed = registry.prune(adapters, keep=2)
    left = [a.version for a in registry.list_adapters(adapters)]
    assert left == ["20261101-030000", "20261105-030000", "20261106-030000"]
    assert len(removed) == 3


def _wait_for(path_glob: tuple[Path, str], timeout: float) -> None:
    folder, pattern = path_glob
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.exists() and any(folder.glob(pattern)):
            return
        time.sleep(0.2)
    raise AssertionError(f"{pattern} never appeared in {folder}")


def test_sigkill_mid_training_then_resume(tmp_path: Path, tiny_base: Path) -> None:
    config = make_config(tmp_path, tiny_base, checkpoint_steps=3)
    first = train(config)  # an adapter in use before the crash
    assert first is not None
    before = [(a.version, a.state) for a in registry.list_adapters(config.adapters_dir)]
    proc = subprocess.Popen(
        twin_command(config, "train", "--max-steps", "100000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for((config.data_dir / "checkpoints", "run.*/checkpoint-6"), timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert registry.current_version(config.adapters_dir) == first.version
    assert [(a.version, a.state) for a in registry.list_adapters(config.adapters_dir)] == before
    # The kill lands a few steps after checkpoint-6 at the earliest: resume from whichever
    # complete checkpoint is newest and train 3 steps past it.
    saved = _complete_checkpoint_steps(config.data_dir / "checkpoints")
    target = max(saved) + 3
    resumed = subprocess.run(
        twin_command(config, "train", "--resume", "--max-steps", str(target)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    newest = registry.list_adapters(config.adapters_dir)[-1]
    assert newest.version != first.version
    assert newest.metrics.run.steps == target
    assert str(newest.metrics.run.resumed_from).endswith(f"checkpoint-{max(saved)}")


def test_a_run_keeps_a_live_runs_checkpoints_and_sweeps_dead_ones(
    tmp_path: Path, tiny_base: Path
) -> None:
    config = make_config(tmp_path, tiny_base, checkpoint_steps=3)
    root = config.data_dir / "checkpoints"
    with _another_run() as alive:
        live = root / f"run.{alive}" / "checkpoint-3"  # a run going on beside this one
        dead = root / f"run.{dead_tag()}" / "checkpoint-3"  # a run killed earlier
        legacy = root / "checkpoint-6"  # the layout before runs had folders of their own
        for folder in (live, dead, legacy):
            folder.mkdir(parents=True)
            (folder / "trainer_state.json").write_text('{"global_step": 3}')
        result = train(config)
        assert result is not None and result.metrics.run.steps == 12
        assert (live / "trainer_state.json").exists()
        assert sorted(p.name for p in root.iterdir()) == [live.parent.name]


def _complete_checkpoint_steps(folder: Path) -> list[int]:
    steps = []
    for checkpoint in folder.glob("run.*/checkpoint-*"):
        # One cut short by the kill is not resumable; the trainer decides the same way.
        with contextlib.suppress(OSError, ValueError):
            steps.append(json.loads((checkpoint / "trainer_state.json").read_text())["global_step"])
    return steps


def test_resume_without_checkpoint_is_a_clear_error(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, tiny_base)
    assert main(["--config", str(config.source), "train", "--resume"]) == 1
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "Traceback" not in err


def test_status_json_lists_adapters_without_message_text(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, tiny_base, max_steps=4, sample_replies=3)
    result = train(config)
    assert result is not None and result.metrics.samples
    assert main(["--config", str(config.source), "status", "--json"]) == 0
    out = capsys.readouterr().out
    status = json.loads(out)
    assert status["adapter"] == result.version
    (adapter,) = status["adapters"]
    assert adapter["state"] == "current" and adapter["version"] == result.version
    assert adapter["eval_loss"] == pytest.approx(result.metrics.eval_loss)
    # Monitoring reads this: held-out messages and the owner's replies stay in the adapter's
    # own (0600) files, never here.
    for sample in result.metrics.samples:
        for text in (sample.message, sample.real):
            assert json.dumps(text)[1:-1] not in out


def test_adapter_records_the_hash_twin_dataset_wrote(tmp_path: Path, tiny_base: Path) -> None:
    # The nightly retrain compares these two to skip training when nothing is new.
    from ingest.dataset import dataset_sha256

    config = make_config(tmp_path, tiny_base, max_steps=2)
    texts = {n: (config.dataset_dir / n).read_text() for n in ("train.jsonl", "eval.jsonl")}
    result = train(config)
    assert result is not None and result.metrics.dataset.sha256 == dataset_sha256(texts)


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "setting", "dtype"),
    [
        (False, True, "auto", "float32"),  # AVX512-BF16 without AMX: bf16 measured slower
        (True, True, "auto", "bfloat16"),
        (False, False, "auto", "float32"),
        (False, False, "bf16", "bfloat16"),  # asked for explicitly
        (True, True, "fp32", "float32"),
    ],
)
def test_cpu_dtype_picks_bf16_only_with_amx(
    monkeypatch: pytest.MonkeyPatch, amx: bool, avx512_bf16: bool, setting: str, dtype: str
) -> None:
    import torch

    from trainer.model import load_plan
    from twin.core.config import config_from_dict

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    plan = load_plan(config_from_dict({"model": {"cpu_dtype": setting}}))
    assert plan.device == "cpu" and plan.dtype == getattr(torch, dtype)


def test_reply_only_head_gives_the_models_own_loss(tmp_path: Path, tiny_base: Path) -> None:
    import torch

    from trainer.data import collator, encode_examples, read_dataset
    from trainer.loss import reply_loss_sum
    from trainer.model import load_base

    config = make_config(tmp_path, tiny_base)
    base = load_base(config)
    model, tokenizer = base.model, base.tokenizer
    rows = read_dataset(config.dataset_dir).train
    batch = collator(tokenizer)(encode_examples(tokenizer, rows[:4], 128))
    with torch.inference_mode():
        loss, n = reply_loss_sum(model, batch)
        reference = model(**batch).loss  # transformers' mean over the labelled tokens
    assert n == int((batch["labels"][:, 1:] != -100).sum()) > 0
    assert float(loss) / n == pytest.approx(float(reference), rel=1e-5)
