"""The SQLite store of the owner's messages: one file, WAL mode, keyed by (chat id, message id).

Chat and sender ids are Telegram's marked peer ids (ingest.peers): a user and a group that
share a bare id are two chats.

Both importers (Telegram Desktop exports and the Telethon pull) and the bot's live history
(Telegram Business: bot.live_history) write `Message` rows here, and the dataset builder reads
them back. Importers only insert, never rewrite, so importing the same data twice adds
nothing; only the live history changes a row, when Telegram reports an edit or a deletion.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import NamedTuple

from twin.core.db import Database, Migration
from twin.core.language import detect_language

# Migrations (twin.core.db): append new ones; never change what a shipped one does.


def _m1_messages(conn: sqlite3.Connection) -> None:
    """Chats, their messages, and who the owner is (meta)."""
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.execute(
        """
        CREATE TABLE chats (
            chat_id INTEGER PRIMARY KEY,
            name TEXT,
            type TEXT
        )
        """
    )
    # date          unix seconds
    # sender_id     NULL when the export carries no id
    # sender_name   NULL for deleted accounts
    # kind          'message' or 'service'
    # media_type    'photo', 'sticker', 'voice_message', ... or NULL
    # text          plain text (caption for media), '' when none
    # forwarded_from  set when forwarded: not the sender's own words
    # edited        unix seconds of the last edit, NULL if never
    conn.execute(
        """
        CREATE TABLE messages (
            chat_id INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            date INTEGER NOT NULL,
            sender_id INTEGER,
            sender_name TEXT,
            kind TEXT NOT NULL,
            media_type TEXT,
            text TEXT NOT NULL,
            reply_to INTEGER,
            forwarded_from TEXT,
            edited INTEGER,
            PRIMARY KEY (chat_id, message_id)
        ) WITHOUT ROWID
        """
    )
    conn.execute("CREATE INDEX messages_by_time ON messages (chat_id, date, message_id)")


def _m2_imported_files(conn: sqlite3.Connection) -> None:
    """Export files imported in full, by content: re-reading the same file is a no-op."""
    # me   the --me it was imported with ('' = detected)
    conn.execute(
        """
        CREATE TABLE imported_files (
            sha256 TEXT NOT NULL,
            me TEXT NOT NULL,
            path TEXT NOT NULL,
            added INTEGER NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (sha256, me)
        )
        """
    )


def _m3_marked_chat_ids(conn: sqlite3.Connection) -> None:
    """Chat and sender ids carry their peer type (ingest.peers): users stay as they are, basic
    groups become -id, supergroups and channels -(10**12 + id).

    A chat stored without a known type cannot be placed: it gets a key of its own,
    -(2**52 + id), as new imports of such a chat do. Negative ids (already marked, or made up
    for chats without an id) and ids of 2**52 or more (no Telegram id) stay. Senders were
    stored bare and are taken as users, except a supergroup's or channel's own id in its own
    chat: the chat speaking.
    """
    conn.execute(
        "CREATE TABLE chat_id_changes"
        " (old INTEGER PRIMARY KEY, new INTEGER NOT NULL, channel INTEGER)"
    )
    conn.execute(
        """
        INSERT INTO chat_id_changes (old, new, channel)
        SELECT ids.chat_id,
            CASE
                WHEN ids.chat_id <= 0 OR ids.chat_id >= 4503599627370496 THEN ids.chat_id
                WHEN c.type IN ('personal_chat', 'bot_chat', 'saved_messages') THEN ids.chat_id
                WHEN c.type = 'private_group' THEN -ids.chat_id
                WHEN c.type IN ('private_supergroup', 'public_supergroup', 'private_channel',
                                'public_channel') THEN -(1000000000000 + ids.chat_id)
                ELSE -(4503599627370496 + ids.chat_id)
            END,
            c.type IN ('private_supergroup', 'public_supergroup', 'private_channel',
                       'public_channel')
        FROM (SELECT chat_id FROM chats UNION SELECT DISTINCT chat_id FROM messages) AS ids
        LEFT JOIN chats AS c ON c.chat_id = ids.chat_id
        """
    )
    conn.execute("DELETE FROM chat_id_changes WHERE new = old")
    # Two old rows that are one chat (a group imported once bare, once marked) become one:
    # the row already there wins, as a re-import would have.
    conn.execute(
        """
        UPDATE OR IGNORE messages SET
            sender_id = CASE
                WHEN sender_id = chat_id
                    AND (SELECT channel FROM chat_id_changes WHERE old = messages.chat_id)
                THEN (SELECT new FROM chat_id_changes WHERE old = messages.chat_id)
                ELSE sender_id
            END,
            chat_id = (SELECT new FROM chat_id_changes WHERE old = messages.chat_id)
        WHERE chat_id IN (SELECT old FROM chat_id_changes)
        """
    )
    conn.execute("DELETE FROM messages WHERE chat_id IN (SELECT old FROM chat_id_changes)")
    conn.execute(
        """
        INSERT OR IGNORE INTO chats (chat_id, name, type)
        SELECT ch.new, c.name, c.type
        FROM chats AS c JOIN chat_id_changes AS ch ON ch.old = c.chat_id
        ORDER BY c.chat_id
        """
    )
    conn.execute("DELETE FROM chats WHERE chat_id IN (SELECT old FROM chat_id_changes)")
    conn.execute("DROP TABLE chat_id_changes")


def _m4_chat_names_and_pins(conn: sqlite3.Connection) -> None:
    """Every name a chat has been stored under (a config entry that names a chat finds it
    under an old name too, so a rename between two imports cannot slip it past a list), and
    the chats each [ingest] include_chats / exclude_chats entry matched when it first matched
    any (ingest.selection): the entry keeps meaning them under any later name."""
    conn.execute(
        """
        CREATE TABLE chat_names (
            chat_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            PRIMARY KEY (chat_id, name)
        ) WITHOUT ROWID
        """
    )
    conn.execute(
        "INSERT INTO chat_names (chat_id, name) SELECT chat_id, name FROM chats"
        " WHERE name IS NOT NULL"
    )
    # list    'include' or 'exclude'
    # entry   the entry as written, trimmed and case-folded
    conn.execute(
        """
        CREATE TABLE chat_pins (
            list TEXT NOT NULL,
            entry TEXT NOT NULL,
            chat_id INTEGER NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (list, entry, chat_id)
        ) WITHOUT ROWID
        """
    )


def _m5_voice(conn: sqlite3.Connection) -> None:
    """Voice messages as words: a message whose text is a transcript of its sound is marked
    `spoken`; each sound file is transcribed once, by content (`transcripts`); and the voice
    messages not transcribed yet wait in `voice_files`: an export's whose file was missing or
    unreadable (or no transcriber was installed), for the next import; a pull's that its
    download budget passed over, for the next pull."""
    conn.execute("ALTER TABLE messages ADD COLUMN spoken INTEGER NOT NULL DEFAULT 0")
    # text      '' when the file holds no speech
    # seconds   the sound's length
    # model     the Whisper model that wrote it (another model writes its own)
    conn.execute(
        """
        CREATE TABLE transcripts (
            sha256 TEXT NOT NULL,
            model TEXT NOT NULL,
            text TEXT NOT NULL,
            language TEXT NOT NULL,
            seconds REAL NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (sha256, model)
        ) WITHOUT ROWID
        """
    )
    # path   the file, absolute, as the export named it; '' for a sound still in Telegram
    conn.execute(
        """
        CREATE TABLE voice_files (
            chat_id INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            path TEXT NOT NULL,
            PRIMARY KEY (chat_id, message_id)
        ) WITHOUT ROWID
        """
    )


MIGRATIONS: list[Migration] = [
    _m1_messages,
    _m2_imported_files,
    _m3_marked_chat_ids,
    _m4_chat_names_and_pins,
    _m5_voice,
]
SCHEMA_VERSION = len(MIGRATIONS)


class Chat(NamedTuple):
    chat_id: int  # marked: users as they are, basic groups -id, channels -(10**12 + id)
    name: str | None
    type: str | None  # Telegram Desktop's vocabulary: personal_chat, private_group, bot_chat, ...


class Message(NamedTuple):
    """One stored message; a NamedTuple so rows go to and from SQLite without copying."""

    chat_id: int
    message_id: int
    date: int
    sender_id: int | None  # marked like chat ids: a user, or a chat speaking as itself
    sender_name: str | None
    kind: str
    media_type: str | None
    text: str
    reply_to: int | None = None
    forwarded_from: str | None = None
    edited: int | None = None
    # The text is what was said in a voice (or round video) message, transcribed.
    spoken: bool = False


@dataclass(frozen=True)
class Owner:
    """Who the owner is: an id when the source has ids, else the exact display name."""

    user_id: int | None
    name: str | None = None
    phone: str | None = None

    def wrote(self, message: Message) -> bool:
        return self.wrote_as(message.sender_id, message.sender_name)

    def wrote_as(self, sender_id: int | None, sender_name: str | None) -> bool:
        """Whether a message from this sender (id, display name) is the owner's."""
        if self.user_id is not None and sender_id is not None:
            return sender_id == self.user_id
        return self.name is not None and sender_name == self.name


def _null(value: None) -> None:
    return value


# sqlite3 binds a None only after looking for an adapter for it (in its registry, then on the
# protocol, then on None itself), and a message row has four or five: a million rows of that
# shape took 2.35 s to bind and insert, 1.5 s with None's own adapter, which ends the search
# at its first step. What is bound stays NULL; it holds for every connection of the process.
sqlite3.register_adapter(type(None), _null)

_MESSAGE_COLUMNS = ", ".join(Message._fields)
_MESSAGE_PLACEHOLDERS = ", ".join("?" for _ in Message._fields)
_INSERT_ONE = (
    f"INSERT OR IGNORE INTO messages ({_MESSAGE_COLUMNS}) VALUES ({_MESSAGE_PLACEHOLDERS})"
)
# sqlite3 spends about as long on each run of a statement (its binding aside) as SQLite does
# inserting a row, so messages go in this many to a statement: a million rows took 3.05 s one
# to a statement, 2.0 s with anything from ten to a hundred (fifty bind 550 values, under the
# 999 that older SQLite builds allow).
_ROWS_PER_INSERT = 50
_INSERT_MANY = _INSERT_ONE + f", ({_MESSAGE_PLACEHOLDERS})" * (_ROWS_PER_INSERT - 1)


class Store(Database):
    """The message store; `open_store` opens one."""

    migrations = MIGRATIONS

    def save_chat(self, chat: Chat) -> None:
        """Insert or refresh a chat's name and type (names change; ids do not). Every name a
        chat had stays on record (`chat_names`), for the include / exclude lists."""
        self.conn.execute(
            "INSERT INTO chats (chat_id, name, type) VALUES (?, ?, ?) "
            "ON CONFLICT(chat_id) DO UPDATE SET name = coalesce(excluded.name, name), "
            "type = coalesce(excluded.type, type)",
            chat,
        )
        if chat.name is not None:
            self.conn.execute(
                "INSERT OR IGNORE INTO chat_names (chat_id, name) VALUES (?, ?)",
                (chat.chat_id, chat.name),
            )

    def chat_names(self) -> dict[int, set[str]]:
        """Every name each chat has been stored under, by chat id."""
        names: dict[int, set[str]] = {}
        for chat_id, name in self.conn.execute("SELECT chat_id, name FROM chat_names"):
            names.setdefault(chat_id, set()).add(name)
        return names

    def chat_pins(self) -> dict[tuple[str, str], set[int]]:
        """The chats each include / exclude entry is pinned to: (list, entry) -> chat ids."""
        pins: dict[tuple[str, str], set[int]] = {}
        for which, entry, chat_id in self.conn.execute(
            "SELECT list, entry, chat_id FROM chat_pins"
        ):
            pins.setdefault((which, entry), set()).add(chat_id)
        return pins

    def pin_chats(self, pins: Iterable[tuple[str, str, int]]) -> None:
        """Record (list, entry, chat id) pins; pins already there stay as they were."""
        now = time.time()
        self.conn.executemany(
            "INSERT OR IGNORE INTO chat_pins (list, entry, chat_id, at) VALUES (?, ?, ?, ?)",
            [(which, entry, chat_id, now) for which, entry, chat_id in pins],
        )

    def add_messages(self, messages: Iterable[Message]) -> int:
        """Insert messages not already stored; returns how many were new."""
        rows = list(messages)
        whole = len(rows) - len(rows) % _ROWS_PER_INSERT  # the rows of full statements
        values = list(chain.from_iterable(rows[:whole]))
        width = _ROWS_PER_INSERT * len(Message._fields)
        before = self.conn.total_changes
        self.conn.executemany(
            _INSERT_MANY, [values[at : at + width] for at in range(0, len(values), width)]
        )
        # The rest one to a statement, as plain tuples: sqlite3 binds a tuple subclass (a
        # Message) item by item through the sequence protocol, 0.6 µs a row more than a tuple.
        self.conn.executemany(_INSERT_ONE, map(tuple, rows[whole:]))
        return self.conn.total_changes - before

    def edit_message(self, chat_id: int, message_id: int, text: str, edited: int) -> bool:
        """A message edited in Telegram reads as edited; False when it is not stored."""
        cursor = self.conn.execute(
            "UPDATE messages SET text = ?, edited = ? WHERE chat_id = ? AND message_id = ?",
            (text, edited, chat_id, message_id),
        )
        return cursor.rowcount == 1

    def delete_messages(self, chat_id: int, message_ids: Iterable[int]) -> int:
        """Messages deleted in Telegram leave the store; returns how many were stored."""
        cursor = self.conn.executemany(
            "DELETE FROM messages WHERE chat_id = ? AND message_id = ?",
            [(chat_id, message_id) for message_id in message_ids],
        )
        return cursor.rowcount

    def owner_wrote_in(self, chat_id: int) -> bool:
        """Whether the store holds a message of the owner's in that chat."""
        owner = self.owner()
        if owner is None:
            return False
        row = self.conn.execute(
            "SELECT 1 FROM messages WHERE chat_id = ? AND kind = 'message' AND "
            "(sender_id = ? OR (sender_id IS NULL AND sender_name = ?)) LIMIT 1",
            (chat_id, owner.user_id, owner.name),
        ).fetchone()
        return row is not None

    def max_message_id(self, chat_id: int) -> int:
        """Highest stored message id of a chat (0 if none): where an incremental pull resumes."""
        row = self.conn.execute(
            "SELECT max(message_id) FROM messages WHERE chat_id = ?", (chat_id,)
        ).fetchone()
        return int(row[0] or 0)

    def chats(self) -> list[Chat]:
        rows = self.conn.execute("SELECT chat_id, name, type FROM chats ORDER BY chat_id")
        return [Chat._make(row) for row in rows]

    def messages_of(self, chat_id: int) -> Iterator[Message]:
        """A chat's messages in the order they were sent."""
        rows = self.conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE chat_id = ? ORDER BY date, message_id",
            (chat_id,),
        )
        for row in rows:
            yield Message._make(row)

    def owner(self) -> Owner | None:
        meta = dict(self.conn.execute("SELECT key, value FROM meta WHERE key LIKE 'owner_%'"))
        if not meta:
            return None
        user_id = meta.get("owner_id")
        return Owner(
            user_id=int(user_id) if user_id else None,
            name=meta.get("owner_name") or None,
            phone=meta.get("owner_phone") or None,
        )

    def owner_language(self, config_language: str = "auto") -> str:
        """The owner's language: `[persona] language` unless "auto", else the script of the
        owner's last messages (see twin.core.language)."""
        if config_language != "auto":
            return config_language
        owner = self.owner()
        if owner is None:
            return "en"
        rows = self.conn.execute(
            "SELECT text FROM messages WHERE kind = 'message' AND text != '' AND "
            "(sender_id = ? OR (sender_id IS NULL AND sender_name = ?)) "
            "ORDER BY date DESC LIMIT 2000",
            (owner.user_id, owner.name),
        )
        return detect_language(text for (text,) in rows)

    def set_owner(self, owner: Owner) -> None:
        values = {
            "owner_id": "" if owner.user_id is None else str(owner.user_id),
            "owner_name": owner.name or "",
            "owner_phone": owner.phone or "",
        }
        self.conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            values.items(),
        )

    def was_imported(self, sha256: str, me: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM imported_files WHERE sha256 = ? AND me = ?", (sha256, me)
        ).fetchone()
        return row is not None

    def record_import(self, sha256: str, me: str, path: Path, added: int) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO imported_files (sha256, me, path, added, at) "
            "VALUES (?, ?, ?, ?, ?)",
            (sha256, me, str(path), added, time.time()),
        )

    def transcript(self, sha256: str, model: str) -> str | None:
        """What `model` heard in the sound file with this hash, if it transcribed it before."""
        row = self.conn.execute(
            "SELECT text FROM transcripts WHERE sha256 = ? AND model = ?", (sha256, model)
        ).fetchone()
        return None if row is None else str(row[0])

    def save_transcript(
        self, sha256: str, model: str, text: str, language: str, seconds: float
    ) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO transcripts (sha256, model, text, language, seconds, at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (sha256, model, text, language, seconds, time.time()),
        )

    def add_voice_files(self, files: Iterable[tuple[int, int, str]]) -> None:
        """(chat id, message id, path): a stored voice message's sound, to transcribe; path ''
        for a sound still in Telegram, which a later pull downloads (ingest.telegram)."""
        self.conn.executemany(
            "INSERT OR REPLACE INTO voice_files (chat_id, message_id, path) VALUES (?, ?, ?)",
            files,
        )

    def voice_files(self) -> list[tuple[int, int, str]]:
        """The exports' sound files waiting to be transcribed, whose message still reads as a
        placeholder."""
        rows = self.conn.execute(
            "SELECT v.chat_id, v.message_id, v.path FROM voice_files AS v "
            "JOIN messages AS m ON m.chat_id = v.chat_id AND m.message_id = v.message_id "
            "WHERE v.path != '' AND m.text = '' AND NOT m.spoken "
            "ORDER BY v.chat_id, v.message_id"
        )
        return [(chat_id, message_id, path) for chat_id, message_id, path in rows]

    def voice_in_telegram(self, chat_id: int) -> list[int]:
        """A chat's voice messages whose sound a pull passed over (its download budget spent,
        or the download failed): the ids a later pull downloads first."""
        rows = self.conn.execute(
            "SELECT message_id FROM voice_files WHERE chat_id = ? AND path = '' "
            "ORDER BY message_id",
            (chat_id,),
        )
        return [message_id for (message_id,) in rows]

    def forget_voice_file(self, chat_id: int, message_id: int) -> None:
        """A waiting sound that will never be heard (too long, damaged, deleted)."""
        self.conn.execute(
            "DELETE FROM voice_files WHERE chat_id = ? AND message_id = ?", (chat_id, message_id)
        )

    def set_spoken(self, chat_id: int, message_id: int, text: str) -> None:
        """A voice message's words, transcribed: they take its placeholder's place ('' when
        the sound held no speech). Its sound no longer waits."""
        self.conn.execute(
            "UPDATE messages SET text = ?, spoken = 1 "
            "WHERE chat_id = ? AND message_id = ? AND text = ''",
            (text, chat_id, message_id),
        )
        self.conn.execute(
            "DELETE FROM voice_files WHERE chat_id = ? AND message_id = ?", (chat_id, message_id)
        )

    def count_messages(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    def count_chats(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM chats").fetchone()[0])


def open_store(path: Path) -> Store:
    """Open (creating if needed) the store at `path`, private to the owner and migrated."""
    return Store(path)
