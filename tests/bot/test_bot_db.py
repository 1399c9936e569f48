"""The bot's memory file (data_dir/bot.db): numbered migrations, conversations per topic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.memory import MIGRATIONS, ChatMemory, Where
from twin.core.conversation import OWNER, Said
from twin.core.errors import TwinError

# bot.db as twin wrote it before numbered migrations (user_version 0).
FIRST_SHIPPED = """
CREATE TABLE memory (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    speaker TEXT NOT NULL,
    content TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX memory_chat ON memory (chat_id, seq);
CREATE TABLE told_strangers (user_id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def schema(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
    return [(name, " ".join(sql.split())) for name, sql in rows]


def test_an_old_bot_db_is_migrated_and_keeps_what_it_held(tmp_path: Path) -> None:
    old = tmp_path / "old" / "bot.db"
    old.parent.mkdir()
    with sqlite3.connect(old) as db:
        db.executescript(FIRST_SHIPPED)
        db.execute(
            "INSERT INTO memory (chat_id, role, speaker, content, at) VALUES "
            "(5, 'user', 'Ann', 'see you friday', 1.0), (5, 'assistant', '', 'ok ok', 2.0)"
        )
        db.execute("INSERT INTO flags VALUES ('paused', '1')")
        db.execute("INSERT INTO told_strangers VALUES (77, 3.0)")
    memory = ChatMemory(old, context_messages=20)
    assert memory.schema_version() == len(MIGRATIONS)
    assert memory.recent(Where(5)) == [
        Said("name:Ann", "Ann", "see you friday", 1.0),
        Said(OWNER, "", "ok ok", 2.0),
    ]
    assert memory.paused and not memory.first_contact(77)
    memory.close()
    # The migrated file has exactly the schema a new one gets.
    ChatMemory(tmp_path / "new" / "bot.db", context_messages=20).close()
    assert schema(old) == schema(tmp_path / "new" / "bot.db")


def test_topics_and_chats_do_not_share_memory(tmp_path: Path) -> None:
    memory = ChatMemory(tmp_path / "bot.db", context_messages=3)
    for n in range(5):
        memory.remember(Where(-100, 11), Said("1", "Ann", f"a{n}", float(n)))
    memory.remember(Where(-100, 22), Said("2", "Bob", "b", 9.0))
    assert [s.text for s in memory.recent(Where(-100, 11))] == ["a2", "a3", "a4"]
    assert [s.text for s in memory.recent(Where(-100, 22))] == ["b"]
    assert memory.forget(Where(-100, 11)) == 5  # kept beyond the window, bounded
    assert memory.recent(Where(-100, 22)) != []


def test_a_damaged_bot_db_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(TwinError, match=r"bot\.db: not a usable SQLite database"):
        ChatMemory(path, context_messages=20)
