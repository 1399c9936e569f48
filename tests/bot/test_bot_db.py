"""The bot's file (data_dir/bot.db, bot.chat_log): numbered migrations, conversations per
topic."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.chat_log import MIGRATIONS, ChatLog, Where
from tests.core.helpers import schema as schema_of_conn
from tests.core.helpers import schema_of_script, shipped_database
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
    chat_log = ChatLog(old, context_messages=20)
    assert chat_log.schema_version() == len(MIGRATIONS)
    assert chat_log.recent(Where(5)) == [
        Said("name:Ann", "Ann", "see you friday", 1.0),
        Said(OWNER, "", "ok ok", 2.0),
    ]
    assert chat_log.paused and not chat_log.first_contact(77)
    chat_log.close()
    # The migrated file has exactly the schema a new one gets.
    ChatLog(tmp_path / "new" / "bot.db", context_messages=20).close()
    assert schema(old) == schema(tmp_path / "new" / "bot.db")


# bot.db as twin wrote it at version 2 (FIRST_SHIPPED, then migration 2's columns and index).
SHIPPED_V2 = """
CREATE TABLE memory (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    speaker TEXT NOT NULL,
    content TEXT NOT NULL,
    at REAL NOT NULL,
    thread_id INTEGER NOT NULL DEFAULT 0,
    speaker_key TEXT NOT NULL DEFAULT ''
);
CREATE TABLE told_strangers (user_id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX memory_conversation ON memory (chat_id, thread_id, seq);
"""


def test_a_new_bot_db_has_the_shipped_schema(tmp_path: Path) -> None:
    ChatLog(tmp_path / "bot.db", context_messages=20).close()
    conn = sqlite3.connect(tmp_path / "bot.db")
    assert schema_of_conn(conn) == schema_of_script(SHIPPED_V2)
    conn.close()


def test_a_bot_db_at_the_current_version_opens_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    rows = (
        "INSERT INTO memory (chat_id, role, speaker, content, at, thread_id, speaker_key)"
        " VALUES (5, 'user', 'Ann', 'see you -- friday;', 1.0, 0, '7');"
    )
    shipped_database(path, SHIPPED_V2 + rows, version=len(MIGRATIONS))
    conn = sqlite3.connect(path)
    before = list(conn.iterdump())
    conn.close()
    chat_log = ChatLog(path, context_messages=20)
    assert chat_log.schema_version() == len(MIGRATIONS)
    assert chat_log.recent(Where(5)) == [Said("7", "Ann", "see you -- friday;", 1.0)]
    chat_log.close()
    conn = sqlite3.connect(path)
    assert list(conn.iterdump()) == before
    conn.close()


def test_topics_and_chats_do_not_share_a_chat_log(tmp_path: Path) -> None:
    chat_log = ChatLog(tmp_path / "bot.db", context_messages=3)
    for n in range(5):
        chat_log.remember(Where(-100, 11), Said("1", "Ann", f"a{n}", float(n)))
    chat_log.remember(Where(-100, 22), Said("2", "Bob", "b", 9.0))
    assert [s.text for s in chat_log.recent(Where(-100, 11))] == ["a2", "a3", "a4"]
    assert [s.text for s in chat_log.recent(Where(-100, 22))] == ["b"]
    assert chat_log.forget(Where(-100, 11)) == 5  # kept beyond the window, bounded
    assert chat_log.recent(Where(-100, 22)) != []


def test_a_damaged_bot_db_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(TwinError, match=r"bot\.db: not a usable SQLite database"):
        ChatLog(path, context_messages=20)
