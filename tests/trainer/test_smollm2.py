"""The real embedded SmolLM2-135M: a short LoRA run must lower the held-out loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.trainer.helpers import write_dataset
from trainer.train import train
from twin.core.loading import load_config


@pytest.mark.slow
def test_smollm2_few_steps_lower_heldout_loss(tmp_path: Path, smollm2: Path) -> None:

    config_path = tmp_path / "config.toml"
    config_path.write_text(
        '[paths]\ndata_dir = "data"\n[model]\nbase = "smollm2-135m"\n'
        "[train]\nmax_steps = 8\nbatch_size = 4\nlearning_rate = 1e-3\ncheckpoint_steps = 0\n"
        "max_seq_tokens = 128\nsample_replies = 2\n[generation]\nmax_new_tokens = 12\n"
    )
    config = load_config(config_path)
    write_dataset(config.dataset_dir)
    result = train(config)
    assert result is not None
    m = result.metrics
    assert m.eval_loss < m.base_eval_loss - 0.5, m
    assert result.promoted
    assert m.base_checkpoint.endswith("smollm2-135m-instruct")
    assert json.loads((result.path / "adapter_config.json").read_text())["r"] == 16
    print(result.line())
