"""The store itself: schema version and migrations, WAL mode, private files."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ingest.store import MIGRATIONS, SCHEMA_VERSION, Chat, Message, Owner, open_store
from tests.core.helpers import schema, schema_of_script, shipped_database
from twin.core.db import open_database
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


# --- the schema as shipped ---------------------------------------------------------------

# The store's schema as twin wrote it at versions 1, 2 (3 moved rows, not tables) and 4,
# copied from files the SQL migrations made before migrations were Python functions.
SHIPPED_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE chats (chat_id INTEGER PRIMARY KEY, name TEXT, type TEXT);
CREATE TABLE messages (
    chat_id INTEGER NOT NULL, message_id INTEGER NOT NULL, date INTEGER NOT NULL,
    sender_id INTEGER, sender_name TEXT, kind TEXT NOT NULL, media_type TEXT,
    text TEXT NOT NULL, reply_to INTEGER, forwarded_from TEXT, edited INTEGER,
    PRIMARY KEY (chat_id, message_id)
) WITHOUT ROWID;
CREATE INDEX messages_by_time ON messages (chat_id, date, message_id);
"""
SHIPPED_V2 = (
    SHIPPED_V1
    + """
CREATE TABLE imported_files (
    sha256 TEXT NOT NULL, me TEXT NOT NULL, path TEXT NOT NULL, added INTEGER NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (sha256, me)
);
"""
)
SHIPPED_V4 = (
    SHIPPED_V2
    + """
CREATE TABLE chat_names (
    chat_id INTEGER NOT NULL, name TEXT NOT NULL, PRIMARY KEY (chat_id, name)
) WITHOUT ROWID;
CREATE TABLE chat_pins (
    list TEXT NOT NULL, entry TEXT NOT NULL, chat_id INTEGER NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (list, entry, chat_id)
) WITHOUT ROWID;
"""
)
SHIPPED_V5 = (
    SHIPPED_V4
    + """
ALTER TABLE messages ADD COLUMN spoken INTEGER NOT NULL DEFAULT 0;
CREATE TABLE transcripts (
    sha256 TEXT NOT NULL, model TEXT NOT NULL, text TEXT NOT NULL, language TEXT NOT NULL,
    seconds REAL NOT NULL, at REAL NOT NULL, PRIMARY KEY (sha256, model)
) WITHOUT ROWID;
CREATE TABLE voice_files (
    chat_id INTEGER NOT NULL, message_id INTEGER NOT NULL, path TEXT NOT NULL,
    PRIMARY KEY (chat_id, message_id)
) WITHOUT ROWID;
"""
)
ROWS = """
INSERT INTO meta VALUES ('owner_id', '1');
INSERT INTO chats VALUES (10, 'Vera -- not a comment;', 'personal_chat');
INSERT INTO messages (chat_id, message_id, date, sender_id, sender_name, kind, text)
VALUES (10, 1, 1700000000, 1, 'Olga', 'message', 'hi; -- still the text');
"""


def test_a_new_store_has_the_shipped_schema(tmp_path: Path) -> None:
    assert SCHEMA_VERSION == 5
    with open_store(tmp_path / "twin.db") as store:
        assert schema(store.conn) == schema_of_script(SHIPPED_V5)


def test_a_store_at_the_current_version_opens_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    shipped_database(path, SHIPPED_V5 + ROWS, version=5)
    conn = sqlite3.connect(path)
    before = list(conn.iterdump())
    conn.close()
    with open_store(path) as store:
        assert store.schema_version() == 5
        assert [m.text for m in store.messages_of(10)] == ["hi; -- still the text"]
    conn = sqlite3.connect(path)
    assert list(conn.iterdump()) == before
    conn.close()


def test_a_store_at_version_1_migrates_to_the_shipped_schema(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    shipped_database(path, SHIPPED_V1 + ROWS, version=1)
    with open_store(path) as store:
        assert store.schema_version() == 5
        assert schema(store.conn) == schema_of_script(SHIPPED_V5)
        # A message stored before voice messages were transcribed is typed text.
        assert [m.spoken for m in store.messages_of(10)] == [False]
        assert store.chats() == [Chat(10, "Vera -- not a comment;", "personal_chat")]
        assert store.chat_names() == {10: {"Vera -- not a comment;"}}
        assert store.owner() == Owner(1)


def test_chat_rename_keeps_one_row(tmp_path: Path) -> None:
    with open_store(tmp_path / "twin.db") as store, store.transaction():
        store.save_chat(Chat(1, "Old name", "personal_chat"))
        store.save_chat(Chat(1, "New name", None))
        assert store.chats() == [Chat(1, "New name", "personal_chat")]


# --- migration 3: marked ids -------------------------------------------------------------

# A store as twin wrote it before ids carried their peer type (schema 2): bare ids everywhere.
OLD_CHATS = [
    (10, "Vera", "personal_chat"),
    (7, "Helper", "bot_chat"),
    (20, "Team", "private_group"),
    (-20, "Team", "private_group"),  # the same group, once imported from a Bot API id tool
    (30, "Crew", "private_supergroup"),
    (40, "News", "public_channel"),
    (50, "Someone", None),  # a single-chat export without a type: which kind, unknown
    (-98765, "Minimal", None),  # a chat that had no id: a made-up negative one
]
OLD_MESSAGES = [  # (chat, message, sender)
    (10, 1, 10),
    (10, 2, 1),
    (7, 1, 7),
    (20, 1, 5),
    (20, 2, 1),
    (-20, 2, 1),  # the same message as (20, 2): one row after the merge
    (-20, 3, 5),
    (30, 1, 30),  # the supergroup speaking as itself (an anonymous admin)
    (30, 2, 5),
    (40, 1, 40),  # a channel post
    (50, 1, 50),
    (50, 2, 1),
    (-98765, 1, None),
]


def old_store(path: Path) -> None:
    conn = open_database(path, MIGRATIONS[:2])
    conn.executemany("INSERT INTO chats VALUES (?, ?, ?)", OLD_CHATS)
    conn.executemany(
        "INSERT INTO messages (chat_id, message_id, date, sender_id, sender_name, kind, text)"
        " VALUES (?, ?, 1700000000 + ?, ?, 'x', 'message', ?)",
        [(c, m, m, s, f"{c}/{m}") for c, m, s in OLD_MESSAGES],
    )
    conn.execute("INSERT INTO meta VALUES ('owner_id', '1')")
    conn.execute("INSERT INTO imported_files VALUES ('abc', '', 'result.json', 13, 1.0)")
    conn.close()


def test_an_old_store_is_migrated_to_marked_ids(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    old_store(path)
    with open_store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.chats() == [
            Chat(-(2**52 + 50), "Someone", None),  # kept apart from user 50 and group 50
            Chat(-1000000000040, "News", "public_channel"),
            Chat(-1000000000030, "Crew", "private_supergroup"),
            Chat(-98765, "Minimal", None),
            Chat(-20, "Team", "private_group"),
            Chat(7, "Helper", "bot_chat"),
            Chat(10, "Vera", "personal_chat"),
        ]
        rows = {
            (m.chat_id, m.message_id): (m.sender_id, m.text)
            for chat in store.chats()
            for m in store.messages_of(chat.chat_id)
        }
        assert rows == {
            (10, 1): (10, "10/1"),
            (10, 2): (1, "10/2"),
            (7, 1): (7, "7/1"),
            (-20, 1): (5, "20/1"),
            (-20, 2): (1, "-20/2"),  # the row already there won, as a re-import would
            (-20, 3): (5, "-20/3"),
            (-1000000000030, 1): (-1000000000030, "30/1"),
            (-1000000000030, 2): (5, "30/2"),
            (-1000000000040, 1): (-1000000000040, "40/1"),
            (-(2**52 + 50), 1): (50, "50/1"),
            (-(2**52 + 50), 2): (1, "50/2"),
            (-98765, 1): (None, "-98765/1"),
        }
        assert store.owner() == Owner(1)
        assert store.was_imported("abc", "")  # re-reading an imported file stays a no-op
        assert store.chat_names()[-20] == {"Team"}
    with open_store(path) as store:  # migrated once
        assert store.count_messages() == len(OLD_MESSAGES) - 1


def test_an_export_imported_before_the_migration_adds_nothing_after_it(tmp_path: Path) -> None:
    from ingest.export import import_export

    export = {
        "name": "Crew",
        "type": "private_supergroup",
        "id": 30,
        "messages": [
            {"id": m, "type": "message", "date_unixtime": str(1700000000 + m), "from": "x",
             "from_id": f"user{s}" if s != 30 else "channel30", "text": f"30/{m}"}
            for c, m, s in OLD_MESSAGES
            if c == 30
        ],
    }  # fmt: skip
    path = tmp_path / "twin.db"
    old_store(path)
    result = tmp_path / "result.json"
    result.write_text(json.dumps(export))
    with open_store(path) as store:
        summary = import_export(result, store, me="1", progress=False)
        assert (summary.added, summary.skipped["already stored"]) == (0, 2)
        assert store.count_messages() == len(OLD_MESSAGES) - 1
