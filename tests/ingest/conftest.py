"""Fixtures of the ingest tests (the store itself is tests/conftest.py's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.memory import MemoryIndex, open_memory
from ingest.store import Store, open_store


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[MemoryIndex]:
    with open_memory(tmp_path / "data" / "memory.db") as index:
        yield index


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Store]:
    """A store of its own at tmp_path/twin.db (the Telethon pull's tests)."""
    with open_store(tmp_path / "twin.db") as store:
        yield store
