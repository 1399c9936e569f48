"""What tests import from one another: where the repository is, and the `twin` command line.
(Fixtures live in conftest.py; pytest finds them there without an import.)"""

from __future__ import annotations

import sys
from pathlib import Path

from twin.core.config import Config

REPO = Path(__file__).resolve().parents[1]


def twin_command(config: Config, *args: str) -> list[str]:
    """The `twin` command line for `config`, as a user would type it."""
    assert config.source is not None
    return [sys.executable, "-m", "twin", "--config", str(config.source), *args]
