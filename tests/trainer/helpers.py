"""What the trainer's tests (and others that train) build: a tiny dataset, a config that
trains on it fast, made-up adapter metrics, the owner tag of a dead process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from trainer.metrics import AdapterMetrics, DatasetInfo, Fidelity, Gate, TrainingRun
from twin.core.config import Config
from twin.core.files import owner_tag
from twin.core.loading import load_config

REPLIES = [
    "ngl not sure",
    "ok ok :)",
    "lol yes",
    "haha no",
    "tbh idk",
    "sure sure",
    "brb",
    "omg yes!!",
    "nah",
    "ok see u",
]
PROMPTS = [
    "Are you coming tonight?",
    "Did you push the fix?",
    "How is Pixel?",
    "Want to climb on Saturday?",
    "Coffee later?",
    "Did you read the book?",
]


def write_dataset(folder: Path, n_train: int = 24, n_eval: int = 6) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    system = {"role": "system", "content": "You are Mira. Reply as Mira would."}
    for name, n, offset in (("train.jsonl", n_train, 0), ("eval.jsonl", n_eval, 3)):
        rows = []
        for i in range(n):
            rows.append(
                json.dumps(
                    {
                        "messages": [
                            system,
                            {"role": "user", "content": PROMPTS[(i + offset) % len(PROMPTS)]},
                            {"role": "assistant", "content": REPLIES[(i + offset) % len(REPLIES)]},
                        ]
                    }
                )
            )
        (folder / name).write_text("\n".join(rows) + "\n")


def make_config(tmp_path: Path, base: Path, **train: Any) -> Config:
    values = {
        "max_steps": 12,
        "batch_size": 4,
        "learning_rate": 5e-3,
        "checkpoint_steps": 0,
        "max_seq_tokens": 128,
        "sample_replies": 2,
        **train,
    }
    lines = ["[paths]", 'data_dir = "data"', "[model]", f'base = "{base}"', "[train]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    lines += ["[generation]", "max_new_tokens = 8"]
    # The fidelity eval has tests of its own (tests/trainer/eval/); here it would only cost time.
    lines += ["[eval]", "on_train = false", "require_style_win = false", "memorization_prompts = 8"]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    config = load_config(path)
    write_dataset(config.dataset_dir)
    return config


def fake_metrics(
    eval_loss: float,
    base: float = 3.0,
    *,
    fidelity: Fidelity | None = None,
    promote: bool | None = None,
) -> AdapterMetrics:
    """An adapter's metrics with made-up numbers, for gate and registry tests."""
    return AdapterMetrics(
        created=0.0,
        base_model="tiny",
        base_checkpoint="tiny",
        plan="cpu, float32",
        run=TrainingRun(1, 1.0, 10, 1.0, 10.0, 1.0, 1.0),
        seconds=1.0,
        base_eval_loss=base,
        eval_loss=eval_loss,
        eval_examples=1,
        dataset=DatasetInfo("0" * 64, 1, 1),
        fidelity=fidelity,
        gate=None if promote is None else Gate(promote, "test"),
    )


def dead_tag() -> str:
    """The owner tag of a process that has exited."""
    gone = subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert gone.returncode == 0
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = owner_tag(child.pid)
    child.wait()
    return tag
