"""The bot's own file (data_dir/bot.db): the chat log, each conversation's recent messages,
which replies are written after; who was already told that the twin does not talk to
strangers; and whether replying is paused.

A SQLite file of its own (WAL, numbered migrations): the bot writes it while `twin retrain`
rebuilds the store in another process, and neither should wait on the other. A conversation
is a chat, or one topic of a forum group (topics never share context). Speakers are kept by
id; names are only shown, as prefixes in groups. (The chat log's table is called `memory`, as
first shipped; the recall index, data_dir/memory.db, is another file, ingest's.)
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from twin.core.conversation import OWNER, Said
from twin.core.db import Database, Migration

# Migrations (twin.core.db): append new ones; never change what a shipped one does.


def _m1_first_schema(conn: sqlite3.Connection) -> None:
    """The schema as first shipped, before numbered migrations: IF NOT EXISTS lets a bot.db
    of that time take this step as a no-op."""
    # role      "user" or "assistant"
    # speaker   the user's display name, "" for the twin
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS memory (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id INTEGER NOT NULL,
            role TEXT NOT NULL,
            speaker TEXT NOT NULL,
            content TEXT NOT NULL,
            at REAL NOT NULL
        )
        """
    )
    conn.execute("CREATE INDEX IF NOT EXISTS memory_chat ON memory (chat_id, seq)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS told_strangers (user_id INTEGER PRIMARY KEY, at REAL NOT NULL)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL)")


def _m2_topics_and_speaker_ids(conn: sqlite3.Connection) -> None:
    """Forum topics are conversations of their own; speakers are told apart by id, not name."""
    conn.execute("ALTER TABLE memory ADD COLUMN thread_id INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE memory ADD COLUMN speaker_key TEXT NOT NULL DEFAULT ''")
    conn.execute(
        """
        UPDATE memory SET speaker_key = CASE role WHEN 'assistant' THEN 'owner'
                                                  ELSE 'name:' || speaker END
        """
    )
    conn.execute("DROP INDEX memory_chat")
    conn.execute("CREATE INDEX memory_conversation ON memory (chat_id, thread_id, seq)")


MIGRATIONS: list[Migration] = [_m1_first_schema, _m2_topics_and_speaker_ids]

# Rows kept per conversation beyond the context window, so the log does not grow without bound.
_KEEP_FACTOR = 4


@dataclass(frozen=True)
class Where:
    """A conversation: a chat, or a topic of a forum group (thread 0: none)."""

    chat_id: int
    thread_id: int = 0


class ChatLog(Database):
    """The bot's file (bot.db): the chat log, strangers told, the pause flag."""

    migrations = MIGRATIONS

    def __init__(self, path: Path, context_messages: int) -> None:
        super().__init__(path)
        self.context_messages = context_messages

    def remember(self, where: Where, said: Said) -> None:
        """Keep one message of a conversation (a user's, or the twin's reply as OWNER)."""
        role = "assistant" if said.speaker == OWNER else "user"
        with self.transaction():
            self.conn.execute(
                "INSERT INTO memory (chat_id, thread_id, role, speaker_key, speaker, content, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (where.chat_id, where.thread_id, role, said.speaker, said.name, said.text, said.at),
            )
            self.conn.execute(
                "DELETE FROM memory WHERE chat_id = ? AND thread_id = ? AND seq <= ("
                "SELECT seq FROM memory WHERE chat_id = ? AND thread_id = ? "
                "ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (
                    where.chat_id,
                    where.thread_id,
                    where.chat_id,
                    where.thread_id,
                    self.context_messages * _KEEP_FACTOR,
                ),
            )

    def recent(self, where: Where) -> list[Said]:
        """The conversation's last `context_messages` messages, oldest first."""
        rows = self.conn.execute(
            "SELECT speaker_key, speaker, content, at FROM memory "
            "WHERE chat_id = ? AND thread_id = ? ORDER BY seq DESC LIMIT ?",
            (where.chat_id, where.thread_id, self.context_messages),
        ).fetchall()
        return [Said(key, name, text, at) for key, name, text, at in reversed(rows)]

    def forget(self, where: Where) -> int:
        return self.conn.execute(
            "DELETE FROM memory WHERE chat_id = ? AND thread_id = ?",
            (where.chat_id, where.thread_id),
        ).rowcount

    def first_contact(self, user_id: int) -> bool:
        """True the first time a stranger writes (they get the notice once), False after."""
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO told_strangers (user_id, at) VALUES (?, ?)",
            (user_id, time.time()),
        )
        return cursor.rowcount == 1

    @property
    def paused(self) -> bool:
        row = self.conn.execute("SELECT value FROM flags WHERE name = 'paused'").fetchone()
        return bool(row and row[0] == "1")

    @paused.setter
    def paused(self, value: bool) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO flags (name, value) VALUES ('paused', ?)",
            ("1" if value else "0",),
        )
