"""One contract, every engine: a reply, a batch, a swap between adapters, and the refusal of a
broken adapter (nothing changes, the old one keeps answering). The same test body runs on the
transformers engine, the OpenAI-compatible engine (against the stand-in server) and the
llama.cpp engine (on the embedded SmolLM2, whose GGUF it serves)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.engine import AdapterRefused, Engine
from tests.serving.openai_standin import OpenAIStandIn
from twin.core.config import Config
from twin.core.conversation import ChatMessage
from twin.core.loading import load_config

SYSTEM: ChatMessage = {"role": "system", "content": "You are Mira. Reply as Mira would."}
MESSAGES = ["coffee later?", "did you push the fix?", "how is pixel?"]


def conversations() -> list[list[ChatMessage]]:
    return [[SYSTEM, {"role": "user", "content": text}] for text in MESSAGES]


def write_config(folder: Path, base: str, **serving: object) -> Config:
    lines = ['[paths]\ndata_dir = "data"\n', f'[model]\nbase = "{base}"\ncpu_dtype = "fp32"\n']
    lines.append("[generation]\nmax_new_tokens = 8\ntemperature = 0.0\n")
    if serving:
        lines.append(
            "[serving]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in serving.items())
        )
    path = folder / "config.toml"
    path.write_text("".join(lines))
    return load_config(path)


def broken_copy(adapter: Path, into: Path) -> Path:
    """A copy of `adapter` whose LoRA weights hold NaN."""
    import torch
    from safetensors.torch import load_file, save_file

    target = into / "29990101-000000"
    shutil.copytree(adapter, target)
    path = target / "adapter_model.safetensors"
    state = load_file(str(path))
    key = next(k for k in state if k.endswith("lora_B.weight"))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(path))
    return target


def contract(engine: Engine, config: Config, first: Path, second: Path, broken: Path) -> None:
    settings = config.generation
    bare = engine.generate(conversations(), settings)
    assert len(bare) == 3 and all(isinstance(r, str) for r in bare)
    assert engine.version is None
    engine.swap(first)
    assert engine.version == first.name
    alone = [engine.generate([c], settings)[0] for c in conversations()]
    together = engine.generate(conversations(), settings)
    assert len(together) == 3
    assert together[0] == alone[0]  # batching does not change a greedy reply
    engine.swap(second)
    assert engine.version == second.name
    assert len(engine.generate(conversations(), settings)) == 3
    with pytest.raises(AdapterRefused, match="non-finite"):
        engine.swap(broken)
    assert engine.version == second.name  # refused: nothing changed
    assert len(engine.generate(conversations()[:1], settings)) == 1
    engine.close()


@pytest.fixture
def tiny_adapters(tmp_path: Path, trained_adapters: Path) -> Iterator[tuple[Path, Path, Path]]:
    folders = sorted(p for p in trained_adapters.iterdir() if p.is_dir() and p.name[0].isdigit())
    first, second = folders[:2]
    yield first, second, broken_copy(second, tmp_path)


def test_transformers_engine(
    tmp_path: Path, tiny_base: Path, tiny_adapters: tuple[Path, Path, Path]
) -> None:
    from serving.transformers import TransformersEngine

    config = write_config(tmp_path, str(tiny_base))
    contract(TransformersEngine.load(config), config, *tiny_adapters)


def test_openai_engine(
    tmp_path: Path, tiny_base: Path, tiny_adapters: tuple[Path, Path, Path]
) -> None:
    from serving.openai import OpenAIEngine

    with OpenAIStandIn() as server:
        config = write_config(tmp_path, str(tiny_base), engine="openai", url=server.url)
        contract(OpenAIEngine(config), config, *tiny_adapters)


@pytest.fixture(scope="session")
def smollm2_adapters(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> list[Path]:
    """Two short adapters of the embedded SmolLM2 (the base llama.cpp serves as GGUF)."""
    from tests.trainer.helpers import write_dataset
    from trainer.train import train

    folder = tmp_path_factory.mktemp("smollm2-adapters")
    made = []
    for seed in (1, 2):
        config = write_config(folder, "smollm2-135m")
        config = config.with_section("train", max_steps=3, seed=seed, checkpoint_steps=0)
        config = config.with_section("eval", on_train=False)
        write_dataset(config.dataset_dir)
        result = train(config, progress=False)
        assert result is not None
        made.append(result.path)
    return made


@pytest.mark.slow
def test_llamacpp_engine(tmp_path: Path, smollm2_adapters: list[Path]) -> None:
    from serving.llamacpp import LlamaCppEngine

    config = write_config(tmp_path, "smollm2-135m", engine="llama.cpp")
    first, second = smollm2_adapters
    contract(LlamaCppEngine(config), config, first, second, broken_copy(second, tmp_path))


@pytest.mark.slow
def test_llamacpp_a_swap_drops_what_was_read(tmp_path: Path, smollm2_adapters: list[Path]) -> None:
    """What llama.cpp kept of each chat was computed with the adapter before: after a swap
    nothing of it is used, and a chat's next prompt is read from its first token."""
    from serving.llamacpp import LlamaCppEngine
    from twin.core.chat_format import encode_prompt

    config = write_config(tmp_path, "smollm2-135m", engine="llama.cpp")
    engine = LlamaCppEngine(config)
    chats: list[str | None] = ["a", "b", "c"]
    engine.generate(conversations(), config.generation, chats=chats)
    assert len(engine.states) == 4  # the three chats and their persona prompt
    engine.swap(smollm2_adapters[0])
    assert len(engine.states) == 0 and engine.states.nbytes == 0
    assert not any(engine._llama.cached)
    before = engine._llama.read
    engine.generate(conversations()[:1], config.generation, chats=["a"])
    assert engine._llama.read - before == len(encode_prompt(engine.tokenizer, conversations()[0]))
    engine.close()


@pytest.mark.slow
def test_llamacpp_a_full_disk_while_converting_is_no_refusal(
    tmp_path: Path, smollm2_adapters: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing an adapter's GGUF conversion can fail for a reason that passes (the disk full):
    the engine says it cannot take it now (the bot tries again later), never that the adapter
    is refused (which the bot would not try again)."""
    import errno

    from serving import llamacpp
    from serving.engine import EngineUnavailable
    from trainer.gguf_lora import GGUF_ADAPTER

    config = write_config(tmp_path, "smollm2-135m", engine="llama.cpp")
    adapter = tmp_path / smollm2_adapters[0].name  # not converted yet
    shutil.copytree(smollm2_adapters[0], adapter, ignore=shutil.ignore_patterns(GGUF_ADAPTER))
    engine = llamacpp.LlamaCppEngine(config)
    convert = llamacpp.save_gguf_lora

    def full_disk(*args: object, **kwargs: object) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(llamacpp, "save_gguf_lora", full_disk)
    with pytest.raises(EngineUnavailable, match="No space left on device"):
        engine.swap(adapter)
    assert engine.version is None
    monkeypatch.setattr(llamacpp, "save_gguf_lora", convert)  # space freed
    engine.swap(adapter)
    assert engine.version == adapter.name
    assert len(engine.generate(conversations()[:1], config.generation)) == 1
    engine.close()
