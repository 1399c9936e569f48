"""What the bot remembers across restarts: each chat's recent messages, who was already told
that the twin does not talk to strangers, and whether replying is paused.

A SQLite file of its own (data_dir/bot.db, WAL): the bot writes it while `twin retrain`
rebuilds the store in another process, and neither should wait on the other.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from twin.chat_format import ChatMessage, speaker_prefixed
from twin.files import ensure_private_dir, make_private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS memory (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    role TEXT NOT NULL,       -- "user" or "assistant"
    speaker TEXT NOT NULL,    -- the user's display name (groups prefix it), "" for the twin
    content TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_chat ON memory (chat_id, seq);
CREATE TABLE IF NOT EXISTS told_strangers (user_id INTEGER PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Rows kept per chat beyond the context window, so memory does not grow without bound.
_KEEP_FACTOR = 4


class ChatMemory:
    def __init__(self, path: Path, context_messages: int) -> None:
        ensure_private_dir(path.parent)
        make_private_file(path)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL stays consistent; a power cut may lose the last remembered
        # message, and no fsync sits on the reply path.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self.context_messages = context_messages

    def close(self) -> None:
        self._db.close()

    def remember(self, chat_id: int, role: str, content: str, speaker: str = "") -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO memory (chat_id, role, speaker, content, at) VALUES (?, ?, ?, ?, ?)",
                (chat_id, role, speaker, content, time.time()),
            )
            self._db.execute(
                "DELETE FROM memory WHERE chat_id = ? AND seq <= ("
                "SELECT seq FROM memory WHERE chat_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
                (chat_id, chat_id, self.context_messages * _KEEP_FACTOR),
            )

    def recent(self, chat_id: int) -> list[ChatMessage]:
        """The chat's last messages, oldest first, as the twin sees them.

        Consecutive messages of one speaker merge into one turn (newline-joined), and in a chat
        where several people talk each user turn is prefixed with the name: the dataset's rules.
        """
        rows = self._db.execute(
            "SELECT role, speaker, content FROM memory WHERE chat_id = ? ORDER BY seq DESC LIMIT ?",
            (chat_id, self.context_messages),
        ).fetchall()[::-1]
        several = len({speaker for role, speaker, _ in rows if role == "user"}) > 1
        turns: list[tuple[str, str, str]] = []
        for role, speaker, content in rows:
            if turns and turns[-1][0] == role and turns[-1][1] == speaker:
                turns[-1] = (role, speaker, turns[-1][2] + "\n" + content)
            else:
                turns.append((role, speaker, content))
        return [
            {
                "role": "user" if role == "user" else "assistant",
                "content": speaker_prefixed(speaker, text) if several and role == "user" else text,
            }
            for role, speaker, text in turns
        ]

    def forget(self, chat_id: int) -> int:
        with self._db:
            return self._db.execute("DELETE FROM memory WHERE chat_id = ?", (chat_id,)).rowcount

    def first_contact(self, user_id: int) -> bool:
        """True the first time a stranger writes (they get the notice once), False after."""
        with self._db:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO told_strangers (user_id, at) VALUES (?, ?)",
                (user_id, time.time()),
            )
        return cursor.rowcount == 1

    @property
    def paused(self) -> bool:
        row = self._db.execute("SELECT value FROM flags WHERE name = 'paused'").fetchone()
        return bool(row and row[0] == "1")

    @paused.setter
    def paused(self, value: bool) -> None:
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO flags (name, value) VALUES ('paused', ?)",
                ("1" if value else "0",),
            )
