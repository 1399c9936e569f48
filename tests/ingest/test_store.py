"""The store itself: schema version and migrations, WAL mode, private files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ingest.store import SCHEMA_VERSION, Chat, Message, open_store
from twin.core.errors import TwinError


def test_new_store_is_migrated_wal_and_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "twin.db"
    with open_store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_reopening_keeps_data_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    with open_store(path) as store, store.transaction():
        store.save_chat(Chat(1, "A", "personal_chat"))
        store.add_messages([Message(1, 1, 100, 2, "A", "message", None, "hi")])
    with open_store(path) as store:
        assert store.count_messages() == 1 and store.schema_version() == SCHEMA_VERSION


def test_store_from_a_newer_twin_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    open_store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(TwinError, match="newer than this twin"):
        open_store(path)


def test_chat_rename_keeps_one_row(tmp_path: Path) -> None:
    with open_store(tmp_path / "twin.db") as store, store.transaction():
        store.save_chat(Chat(1, "Old name", "personal_chat"))
        store.save_chat(Chat(1, "New name", None))
        assert store.chats() == [Chat(1, "New name", "personal_chat")]
