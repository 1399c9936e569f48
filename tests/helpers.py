"""What tests import from one another: where the repository is, the `twin` command line, and
the sharper tiny model. (Fixtures live in conftest.py; pytest finds them there without an
import.)"""

from __future__ import annotations

import sys
from pathlib import Path

from twin.core.config import Config

REPO = Path(__file__).resolve().parents[1]
# Speech made here with espeak-ng and opusenc (tests/fixtures/voice/README.md).
VOICE = REPO / "tests" / "fixtures" / "voice"


def twin_command(config: Config, *args: str) -> list[str]:
    """The `twin` command line for `config`, as a user would type it."""
    assert config.source is not None
    return [sys.executable, "-m", "twin", "--config", str(config.source), *args]


def sharp_tiny(tiny_base: Path, folder: Path) -> Path:
    """The tiny random Llama of `tiny_base` (same shapes, same tokenizer) made anew with larger
    weights (initializer_range 0.3), saved in `folder`: its next-token distributions are peaked
    and follow the prompt, where the usual initialisation's are flat and ignore it."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(tiny_base)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_base).save_pretrained(folder)
    return folder
