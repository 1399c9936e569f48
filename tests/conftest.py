"""Shared test fixtures: real exports written by other projects, a real store on disk, the
tiny and the embedded models. Helpers that tests import are in tests/helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.store import Store, open_store
from ingest.voice import Transcriber
from tests.bot.botapi import BotApiStandIn
from tests.helpers import REPO
from twin.core.config import VoiceConfig

# Copies of the real exports in ../shared/fixtures (sources and licenses in SOURCES.md and
# LICENSES.md beside them):
# the tests read nothing outside the repository, so a fresh clone passes on its own.
EXPORTS = REPO / "tests" / "fixtures" / "telegram-exports"


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio, as the bot does."""
    return "asyncio"


@pytest.fixture
def api() -> Iterator[BotApiStandIn]:
    """A Bot API stand-in on 127.0.0.1 (tests/bot/botapi.py) for the real bot to talk to."""
    with BotApiStandIn() as standin:
        yield standin


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with open_store(tmp_path / "data" / "twin.db") as s:
        yield s


@pytest.fixture
def exports() -> Path:
    return EXPORTS


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted embedded models of this test session (each converted at most once), in
    a folder of the tests' own, never the user's cache. Child processes inherit it. A
    TWIN_MODEL_CACHE set from outside (a developer's warm cache) is used as it is."""
    path = Path(os.environ.get("TWIN_MODEL_CACHE") or tmp_path_factory.mktemp("model-cache"))
    os.environ["TWIN_MODEL_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def whisper(model_cache: Path) -> Transcriber:
    """Whisper base (int8) from its packages, loaded once for the session; in English
    (`with_language` gives the same model in another)."""
    return Transcriber(VoiceConfig(), model_cache, "en")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    """The real SmolLM2 tokenizer (and chat template), read once from the embedded GGUF."""
    from transformers import AutoTokenizer

    from trainer.embedded import EMBEDDED, gguf_file

    gguf = gguf_file(EMBEDDED["smollm2-135m"], model_cache)
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
def smollm2(model_cache: Path) -> Path:
    """The embedded SmolLM2, converted once per session into the session's model cache."""
    from trainer.embedded import embedded_checkpoint

    return embedded_checkpoint("smollm2-135m", model_cache)


@pytest.fixture(scope="session")
def trained_adapters(tmp_path_factory: pytest.TempPathFactory, tiny_base: Path) -> Path:
    """Two adapters of the tiny model (different seeds), trained once per session."""
    from tests.bot.helpers import bot_config
    from tests.trainer.helpers import write_dataset
    from trainer import registry
    from trainer.train import train

    folder = tmp_path_factory.mktemp("trained")
    config = bot_config(folder, tiny_base, "http://127.0.0.1:9")
    write_dataset(config.dataset_dir)
    first = train(config).version
    config = bot_config(folder, tiny_base, "http://127.0.0.1:9", train={"seed": 99})
    second = train(config, max_steps=8).version
    assert first < second
    registry.set_current(config.adapters_dir, first)
    return config.adapters_dir
