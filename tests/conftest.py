"""Shared test fixtures: real exports written by other projects, and a real store on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ingest.store import Store, open_store
from twin.config import Config

REPO = Path(__file__).resolve().parents[1]
EXPORTS = REPO.parent / "shared" / "fixtures" / "telegram-exports"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with open_store(tmp_path / "data" / "twin.db") as s:
        yield s


@pytest.fixture
def exports() -> Path:
    if not EXPORTS.is_dir():
        pytest.fail(f"{EXPORTS} is missing: the shared fixtures must sit beside the repository")
    return EXPORTS


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real SmolLM2 tokenizer (and chat template), read once from the embedded GGUF."""
    from transformers import AutoTokenizer

    from trainer.model import embedded_gguf

    gguf = embedded_gguf()
    folder = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, smollm2_tokenizer_dir: Path) -> Path:
    """A tiny random Llama (hidden 64, 2 layers) with the SmolLM2 tokenizer, as a checkpoint
    folder: `[model] base` pointing at it exercises the local-folder path, fast."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def smollm2_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2 converted once per session; tests link it into their data dir."""
    from trainer.model import convert_embedded_base

    models = tmp_path_factory.mktemp("models")
    convert_embedded_base(models)
    return models


def link_models(data_dir: Path, models: Path) -> None:
    """Give a test's data dir the already converted embedded model (saves ~20 s a test)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "models").symlink_to(models, target_is_directory=True)


def twin_command(config: Config, *args: str) -> list[str]:
    """The `twin` command line for `config`, as a user would type it."""
    assert config.source is not None
    return [sys.executable, "-m", "twin", "--config", str(config.source), *args]


def run_twin(config: Config, *args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """Run `twin ARGS` with `config` in a child process; output captured as text."""
    options.setdefault("timeout", 120)
    return subprocess.run(
        twin_command(config, *args), capture_output=True, text=True, check=False, **options
    )
