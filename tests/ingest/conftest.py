"""Fixtures of the ingest tests (the store itself is tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.memory import MemoryIndex, open_memory


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[MemoryIndex]:
    with open_memory(tmp_path / "data" / "memory.db") as index:
        yield index
