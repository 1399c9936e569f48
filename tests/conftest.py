"""Shared test fixtures: real exports written by other projects, and a real store on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.store import Store, open_store

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
