"""The bot's own file (data_dir/bot.db): the chat log, each conversation's recent messages,
which replies are written after; who was already told that the twin does not talk to
strangers; whether replying is paused; and, for Telegram Business, the connections, drafts
and corrections (their queries are bot.business_log's).

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

from twin.core.config import Config
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


def _m3_business(conn: sqlite3.Connection) -> None:
    """Telegram Business: the owner's own chats are conversations apart from the bot's chats
    with the same people (`business`: the business account's user id, 0 for the bot's own);
    messages keep their Telegram id, so a deletion or an edit can find them. The tables of
    connections, per-chat settings, drafts and corrections are bot.business_log's."""
    conn.execute("ALTER TABLE memory ADD COLUMN business INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE memory ADD COLUMN message_id INTEGER")
    conn.execute("DROP INDEX memory_conversation")
    conn.execute("CREATE INDEX memory_conversation ON memory (business, chat_id, thread_id, seq)")
    # One row per connection id Telegram issued; the owner's newest is "the" connection.
    conn.execute(
        """
        CREATE TABLE business_connections (
            connection_id TEXT PRIMARY KEY,
            user_id INTEGER NOT NULL,
            user_chat_id INTEGER NOT NULL,
            enabled INTEGER NOT NULL,
            can_reply INTEGER NOT NULL,
            at REAL NOT NULL
        )
        """
    )
    # Accounts of others that connected the bot: refused, the admins told once.
    conn.execute("CREATE TABLE refused_connections (user_id INTEGER PRIMARY KEY, at REAL NOT NULL)")
    # mode          NULL: [business] mode applies
    # silent_until  the owner took over the chat until then (unix seconds)
    conn.execute(
        """
        CREATE TABLE business_chats (
            business INTEGER NOT NULL,
            chat_id INTEGER NOT NULL,
            mode TEXT,
            silent_until REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (business, chat_id)
        )
        """
    )
    # state     pending, sending, sent, edited, skipped, expired, deleted, taken_over, replaced
    # asked     JSON list of the friend's message ids the draft answers
    # turns     JSON conversation the draft was written after (PII-masked), block likewise
    # notice*   the message in the owner's chat with the bot that shows it, and its text
    conn.execute(
        """
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
        )
        """
    )
    conn.execute("CREATE INDEX drafts_by_chat ON drafts (business, chat_id, state)")
    conn.execute("CREATE INDEX drafts_by_notice ON drafts (notice_chat, notice_id)")
    # /persona sample replies, PII-masked, until the owner rates them (👍 / 👎) once.
    conn.execute(
        """
        CREATE TABLE samples (
            sample_id INTEGER PRIMARY KEY AUTOINCREMENT,
            turns TEXT NOT NULL,
            reply TEXT NOT NULL,
            verdict TEXT,
            at REAL NOT NULL
        )
        """
    )
    # The owner's verdicts on drafts and samples, PII-masked, for preference training.
    # chat_id   the chat a draft answered in (0: a sample, no chat)
    # verdict   sent (as drafted), edited (`sent` holds what went instead), skipped;
    #           liked, disliked (a rated sample)
    conn.execute(
        """
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
        )
        """
    )


MIGRATIONS: list[Migration] = [_m1_first_schema, _m2_topics_and_speaker_ids, _m3_business]


def _key(where: Where) -> tuple[int, int, int]:
    return (where.business, where.chat_id, where.thread_id)


# Rows kept per conversation beyond the context window, so the log does not grow without bound.
_KEEP_FACTOR = 4


def bot_db_path(config: Config) -> Path:
    return config.data_dir / "bot.db"


@dataclass(frozen=True)
class Where:
    """A conversation: a chat, or a topic of a forum group (thread 0: none). `business` is
    the owner's user id for a chat of the owner's own reached through Telegram Business
    (0: the bot's own chats): a friend's chat with the bot and the owner's chat with that
    friend share the chat id, and are two conversations."""

    chat_id: int
    thread_id: int = 0
    business: int = 0


class ChatLog(Database):
    """The bot's file (bot.db): the chat log, strangers told, the pause flag."""

    migrations = MIGRATIONS

    def __init__(self, path: Path, context_messages: int) -> None:
        super().__init__(path)
        self.context_messages = context_messages

    def remember(self, where: Where, said: Said, message_id: int | None = None) -> None:
        """Keep one message of a conversation (a user's, or the twin's reply as OWNER), with
        its Telegram id where a later edit or deletion may refer to it."""
        role = "assistant" if said.speaker == OWNER else "user"
        key = (where.business, where.chat_id, where.thread_id)
        with self.transaction():
            self.conn.execute(
                "INSERT INTO memory (business, chat_id, thread_id, message_id, role, "
                "speaker_key, speaker, content, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*key, message_id, role, said.speaker, said.name, said.text, said.at),
            )
            self.conn.execute(
                "DELETE FROM memory WHERE business = ? AND chat_id = ? AND thread_id = ? "
                "AND seq <= (SELECT seq FROM memory WHERE business = ? AND chat_id = ? "
                "AND thread_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (*key, *key, self.context_messages * _KEEP_FACTOR),
            )

    def recent(self, where: Where) -> list[Said]:
        """The conversation's last `context_messages` messages, oldest first."""
        rows = self.conn.execute(
            "SELECT speaker_key, speaker, content, at FROM memory "
            "WHERE business = ? AND chat_id = ? AND thread_id = ? ORDER BY seq DESC LIMIT ?",
            (where.business, where.chat_id, where.thread_id, self.context_messages),
        ).fetchall()
        return [Said(key, name, text, at) for key, name, text, at in reversed(rows)]

    def forget(self, where: Where) -> int:
        return self.conn.execute(
            "DELETE FROM memory WHERE business = ? AND chat_id = ? AND thread_id = ?",
            (where.business, where.chat_id, where.thread_id),
        ).rowcount

    def edit(self, where: Where, message_id: int, text: str) -> None:
        """A message edited after it was kept: the conversation reads the new text."""
        self.conn.execute(
            "UPDATE memory SET content = ? WHERE business = ? AND chat_id = ? AND message_id = ?",
            (text, where.business, where.chat_id, message_id),
        )

    def waiting(self, where: Where) -> list[tuple[int | None, Said]]:
        """The messages since the twin's or the owner's last turn (what a reply answers),
        oldest first, with their Telegram ids."""
        rows = self.conn.execute(
            "SELECT message_id, speaker_key, speaker, content, at FROM memory "
            "WHERE business = ? AND chat_id = ? AND thread_id = ? AND seq > coalesce(("
            "SELECT max(seq) FROM memory WHERE business = ? AND chat_id = ? AND thread_id = ? "
            "AND role = 'assistant'), 0) ORDER BY seq",
            (*_key(where), *_key(where)),
        ).fetchall()
        return [(message_id, Said(*said)) for message_id, *said in rows]

    def drop(self, where: Where, message_ids: list[int]) -> int:
        """Messages deleted in Telegram leave the conversation too."""
        marks = ", ".join("?" for _ in message_ids)
        return self.conn.execute(
            f"DELETE FROM memory WHERE business = ? AND chat_id = ? AND message_id IN ({marks})",
            (where.business, where.chat_id, *message_ids),
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
