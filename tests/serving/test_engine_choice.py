"""`[serving] engine = "auto"` (the default): llama.cpp where it serves the base on a machine
without a GPU, transformers elsewhere, and the reason either way."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.twin import engine_choice
from twin.core.config import config_from_dict


def choice(**sections: dict[str, object]) -> tuple[str, str]:
    return engine_choice(config_from_dict(sections))


def test_auto_serves_the_embedded_smollm2_with_llama_cpp_on_a_cpu() -> None:
    assert choice(model={"base": "smollm2-135m"}) == (
        "llama.cpp",
        "auto: no GPU, and llama.cpp serves this base",
    )


def test_auto_keeps_transformers_where_llama_cpp_cannot_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gemma's adapters train its turn markers, which a GGUF LoRA cannot carry.
    assert choice(model={"base": "gemma3-270m"})[0] == "transformers"
    # A base of the owner's own without a GGUF of it.
    engine, why = choice(model={"base": str(tmp_path)})
    assert (engine, why) == ("transformers", "auto: no [serving] gguf of this base for llama.cpp")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choice(model={"base": "smollm2-135m"}) == ("transformers", "auto: a GPU is present")


def test_a_named_engine_is_that_engine() -> None:
    config = {"base": "smollm2-135m"}
    assert choice(model=config, serving={"engine": "transformers"})[0] == "transformers"
    assert choice(model={"base": "gemma3-270m"}, serving={"engine": "llama.cpp"})[0] == "llama.cpp"
