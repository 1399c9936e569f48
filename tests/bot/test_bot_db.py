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


# Version 3: Telegram Business (conversations per business account, message ids, the
# connection, per-chat modes, drafts and corrections).
SHIPPED_V3 = """
CREATE TABLE memory (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    role TEXT NOT NULL,
    speaker TEXT NOT NULL,
    content TEXT NOT NULL,
    at REAL NOT NULL,
    thread_id INTEGER NOT NULL DEFAULT 0,
    speaker_key TEXT NOT NULL DEFAULT '',
    business INTEGER NOT NULL DEFAULT 0,
    message_id INTEGER
);
CREATE TABLE told_strangers (user_id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE INDEX memory_conversation ON memory (business, chat_id, thread_id, seq);
CREATE TABLE business_connections (
    connection_id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    user_chat_id INTEGER NOT NULL,
    enabled INTEGER NOT NULL,
    can_reply INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE refused_connections (user_id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE business_chats (
    business INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    mode TEXT,
    silent_until REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (business, chat_id)
);
CREATE TABLE drafts (
    draft_id INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT NOT NULL,
    business INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    asked TEXT NOT NULL,
    draft TEXT NOT NULL,
    turns TEXT NOT NULL,
    block TEXT NOT NULL,
    state TEXT NOT NULL,
    notice_chat INTEGER,
    notice_id INTEGER,
    notice TEXT NOT NULL DEFAULT '',
    expires REAL NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX drafts_by_chat ON drafts (business, chat_id, state);
CREATE INDEX drafts_by_notice ON drafts (notice_chat, notice_id);
CREATE TABLE samples (
    sample_id INTEGER PRIMARY KEY AUTOINCREMENT,
    turns TEXT NOT NULL,
    reply TEXT NOT NULL,
    verdict TEXT,
    at REAL NOT NULL
);
CREATE TABLE corrections (
    correction_id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    turns TEXT NOT NULL,
    block TEXT NOT NULL,
    draft TEXT NOT NULL,
    sent TEXT,
    at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0
);
"""


def test_a_new_bot_db_has_the_shipped_schema(tmp_path: Path) -> None:
    ChatLog(tmp_path / "bot.db", context_messages=20).close()
    conn = sqlite3.connect(tmp_path / "bot.db")
    assert schema_of_conn(conn) == schema_of_script(SHIPPED_V3)
    conn.close()


def test_a_version_2_bot_db_keeps_its_conversations(tmp_path: Path) -> None:
    """Before Telegram Business every conversation was the bot's own: business 0."""
    path = tmp_path / "bot.db"
    rows = (
        "INSERT INTO memory (chat_id, role, speaker, content, at, thread_id, speaker_key)"
        " VALUES (5, 'user', 'Ann', 'hi', 1.0, 0, '7');"
    )
    shipped_database(path, SHIPPED_V2 + rows, version=2)
    chat_log = ChatLog(path, context_messages=20)
    assert chat_log.recent(Where(5)) == [Said("7", "Ann", "hi", 1.0)]
    assert chat_log.recent(Where(5, business=42)) == []
    chat_log.close()


def test_a_bot_db_at_the_current_version_opens_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    rows = (
        "INSERT INTO memory (chat_id, role, speaker, content, at, thread_id, speaker_key)"
        " VALUES (5, 'user', 'Ann', 'see you -- friday;', 1.0, 0, '7');"
    )
    shipped_database(path, SHIPPED_V3 + rows, version=len(MIGRATIONS))
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


def test_a_business_chat_and_the_bot_chat_of_one_friend_are_two_conversations(
    tmp_path: Path,
) -> None:
    chat_log = ChatLog(tmp_path / "bot.db", context_messages=10)
    chat_log.remember(Where(7), Said("7", "Ann", "to the bot", 1.0), 1)
    chat_log.remember(Where(7, business=42), Said("7", "Ann", "to the owner", 2.0), 1)
    chat_log.remember(Where(7, business=42), Said("7", "Ann", "more", 3.0), 2)
    assert [s.text for s in chat_log.recent(Where(7))] == ["to the bot"]
    # Deleting and editing by Telegram's message id touch one conversation only.
    assert chat_log.drop(Where(7, business=42), [1]) == 1
    chat_log.edit(Where(7, business=42), 2, "more, edited")
    assert [s.text for s in chat_log.recent(Where(7, business=42))] == ["more, edited"]
    assert [s.text for s in chat_log.recent(Where(7))] == ["to the bot"]
    chat_log.close()


def test_a_damaged_bot_db_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(TwinError, match=r"bot\.db: not a usable SQLite database"):
        ChatLog(path, context_messages=20)
