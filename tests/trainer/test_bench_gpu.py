"""The GPU benchmark (bench.gpu) as a user runs it: its code at tiny sizes, on the CPU here,
and the one-line refusal of `python -m bench --gpu` on a machine without CUDA."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import REPO


def qwen2_parameters(shape: dict[str, Any]) -> int:
    """Qwen2's parameter count at `shape`, counted by hand: embeddings and an untied head,
    per layer q/k/v (with bias), o, the gated MLP and two norms, and the final norm."""
    hidden, vocab = shape["hidden_size"], shape["vocab_size"]
    kv = hidden // shape["num_attention_heads"] * shape["num_key_value_heads"]
    attention = (hidden * hidden + hidden) + 2 * (hidden * kv + kv) + hidden * hidden
    layer = attention + 3 * hidden * shape["intermediate_size"] + 2 * hidden
    return 2 * vocab * hidden + shape["num_hidden_layers"] * layer + hidden


def test_tiny_run_trains_and_decodes_and_reports_figures(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--tiny", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())

    model = result["model"]
    assert model["shape"] == "tiny"
    assert (model["hidden_size"], model["num_hidden_layers"], model["vocab_size"]) == (64, 2, 49152)
    assert model["parameters"] == qwen2_parameters(model)
    # 4-bit where CUDA is (bitsandbytes' path), the plain LoRA model on a CPU.
    assert result["quantized"] is torch.cuda.is_available()

    training = result["training"]
    assert math.isfinite(training["tokens_per_s"]) and training["tokens_per_s"] > 0
    assert (
        training["tokens"] == training["batch"] * training["seq_tokens"] * training["timed_steps"]
    )
    assert training["seconds"] > 0 and training["peak_memory_mb"] > 0
    assert math.isfinite(training["train_loss"])
    assert training["lora_r"] == 16
    assert set(training["lora_targets"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    }  # fmt: skip
    assert training["anchors_tokens_per_s"] == {"hf_qlora_4bit_a100": 2415.0, "unsloth": 3726.0}

    replies = result["replies"]
    # The end-of-turn is never picked: both decodings give every token asked for.
    assert replies["plain"]["new_tokens"] == replies["new_tokens_asked"]
    assert replies["guided"]["new_tokens"] == replies["new_tokens_asked"]
    assert replies["contrast_prompt_tokens"] < replies["prompt_tokens"]
    ratio = replies["guided_over_plain"]
    assert math.isfinite(ratio) and ratio > 0
    assert ratio == pytest.approx(replies["guided"]["seconds"] / replies["plain"]["seconds"])


@pytest.mark.parametrize(
    "command", [["bench", "--gpu"], ["bench.gpu"]], ids=["bench --gpu", "bench.gpu"]
)
def test_without_cuda_says_so_in_one_line_and_exits_2(tmp_path: Path, command: list[str]) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", *command, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},  # no CUDA, even on a GPU machine
    )
    assert run.returncode == 2
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "no GPU is present" in lines[0], run.stderr
    assert not out.exists()
