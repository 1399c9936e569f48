"""What the bot keeps of Telegram Business in bot.db: the owner's connections, per-chat modes
and silences, drafts waiting for the owner, and the owner's corrections (of drafts, and of
/persona sample replies rated 👍 / 👎).

The tables are made by bot.chat_log's migration 3 (bot.db has one list of migrations); this
module holds their queries, on the ChatLog's connection (the event loop's thread). A draft
changes state only from "pending", in one UPDATE that checks it: two presses of Send, or a
press racing an expiry, cannot both win, so a draft is sent at most once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

from bot.chat_log import ChatLog, Where
from twin.core.conversation import ChatMessage

Mode = Literal["draft", "auto", "off"]
MODES: tuple[Mode, ...] = ("draft", "auto", "off")
# The owner's verdicts a correction records: on drafts, and on /persona sample replies.
VERDICTS = ("sent", "edited", "skipped", "liked", "disliked")
# What became of a draft: "sending" while it goes out; the rest are final.
Outcome = Literal["sent", "edited", "skipped", "expired", "deleted", "taken_over", "replaced"]


@dataclass(frozen=True)
class KeptCorrection:
    """One verdict of the owner, as bot.db keeps it (masked): the twin's `draft` written after
    `turns` with memory `block`, and the owner's own text when they edited it. Training reads
    it as a trainer.pairs.Correction (twin.app.corrections)."""

    correction_id: int
    chat_id: int  # 0 for a /persona sample
    verdict: str
    turns: list[ChatMessage]
    block: str
    draft: str
    sent: str | None


@dataclass(frozen=True)
class Connection:
    """A business connection as Telegram last described it."""

    connection_id: str
    user_id: int  # the business account: the owner
    user_chat_id: int  # the owner's private chat with the bot: drafts and notices go there
    enabled: bool
    can_reply: bool

    @property
    def usable(self) -> bool:
        return self.enabled and self.can_reply


@dataclass(frozen=True)
class Draft:
    draft_id: int
    connection_id: str  # the connection of the message it answers: sends go through it
    where: Where
    asked: tuple[int, ...]  # the friend's message ids it answers
    draft: str
    turns: list[ChatMessage]  # what it was written after (PII-masked)
    block: str  # the memory block it was written with (PII-masked)
    state: str
    notice_chat: int | None
    notice_id: int | None
    notice: str  # its text, without buttons
    expires: float  # Telegram's 24-hour reply window closes (unix seconds)


_DRAFT_COLUMNS = (
    "draft_id, connection_id, business, chat_id, asked, draft, turns, block, state, "
    "notice_chat, notice_id, notice, expires"
)


def _draft(row: tuple[Any, ...]) -> Draft:
    """A drafts row (SQLite's types: ints, floats, text) as a Draft."""
    (draft_id, connection_id, business, chat_id, asked, draft, turns, block, state, *rest) = row
    notice_chat, notice_id, notice, expires = rest
    return Draft(
        draft_id=draft_id,
        connection_id=connection_id,
        where=Where(chat_id, 0, business),
        asked=tuple(json.loads(asked)),
        draft=draft,
        turns=json.loads(turns),
        block=block,
        state=state,
        notice_chat=notice_chat,
        notice_id=notice_id,
        notice=notice,
        expires=expires,
    )


class BusinessLog:
    """Telegram Business's tables in bot.db."""

    def __init__(self, chat_log: ChatLog) -> None:
        self.conn = chat_log.conn
        self._chat_log = chat_log

    # --- connections ---------------------------------------------------------------------

    def record_connection(self, connection: Connection) -> Connection | None:
        """Keep what Telegram said of a connection; returns the owner's newest one before."""
        before = self.owner_connection(connection.user_id)
        self.conn.execute(
            "INSERT OR REPLACE INTO business_connections (connection_id, user_id, user_chat_id, "
            "enabled, can_reply, at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                connection.connection_id,
                connection.user_id,
                connection.user_chat_id,
                int(connection.enabled),
                int(connection.can_reply),
                time.time(),
            ),
        )
        return before

    def connection(self, connection_id: str) -> Connection | None:
        row = self.conn.execute(
            "SELECT connection_id, user_id, user_chat_id, enabled, can_reply "
            "FROM business_connections WHERE connection_id = ?",
            (connection_id,),
        ).fetchone()
        return _connection(row)

    def owner_connection(self, user_id: int) -> Connection | None:
        """The owner's connection as Telegram described it last (it may issue new ids)."""
        row = self.conn.execute(
            "SELECT connection_id, user_id, user_chat_id, enabled, can_reply "
            "FROM business_connections WHERE user_id = ? ORDER BY at DESC, rowid DESC LIMIT 1",
            (user_id,),
        ).fetchone()
        return _connection(row)

    def connections(self) -> list[Connection]:
        """Every account's newest connection (only the owner's are ever recorded)."""
        rows = self.conn.execute(
            "SELECT connection_id, user_id, user_chat_id, enabled, can_reply "
            "FROM business_connections ORDER BY at DESC, rowid DESC"
        ).fetchall()
        newest: dict[int, Connection] = {}
        for row in rows:
            connection = _connection(row)
            assert connection is not None
            newest.setdefault(connection.user_id, connection)
        return list(newest.values())

    def first_refusal(self, user_id: int) -> bool:
        """True the first time an account other than the owner's connects (admins are told
        once), False after."""
        cursor = self.conn.execute(
            "INSERT OR IGNORE INTO refused_connections (user_id, at) VALUES (?, ?)",
            (user_id, time.time()),
        )
        return cursor.rowcount == 1

    # --- chats ---------------------------------------------------------------------------

    def chat_mode(self, where: Where) -> Mode | None:
        """The mode set for this chat with /persona business (None: [business] mode)."""
        row = self.conn.execute(
            "SELECT mode FROM business_chats WHERE business = ? AND chat_id = ?",
            (where.business, where.chat_id),
        ).fetchone()
        mode = row[0] if row else None
        return mode if mode in MODES else None

    def set_chat_mode(self, where: Where, mode: Mode | None) -> None:
        self.conn.execute(
            "INSERT INTO business_chats (business, chat_id, mode) VALUES (?, ?, ?) "
            "ON CONFLICT(business, chat_id) DO UPDATE SET mode = excluded.mode",
            (where.business, where.chat_id, mode),
        )

    def chat_modes(self) -> dict[int, Mode]:
        """Per-chat modes, by chat id."""
        rows = self.conn.execute(
            "SELECT chat_id, mode FROM business_chats WHERE mode IS NOT NULL ORDER BY chat_id"
        )
        return {chat_id: mode for chat_id, mode in rows if mode in MODES}

    def silence(self, where: Where, until: float) -> None:
        """The owner took the chat over: the twin keeps quiet there until `until`."""
        self.conn.execute(
            "INSERT INTO business_chats (business, chat_id, silent_until) VALUES (?, ?, ?) "
            "ON CONFLICT(business, chat_id) DO UPDATE SET silent_until = excluded.silent_until",
            (where.business, where.chat_id, until),
        )

    def silent_until(self, where: Where) -> float:
        row = self.conn.execute(
            "SELECT silent_until FROM business_chats WHERE business = ? AND chat_id = ?",
            (where.business, where.chat_id),
        ).fetchone()
        return float(row[0]) if row else 0.0

    # --- drafts --------------------------------------------------------------------------

    def add_draft(
        self,
        connection_id: str,
        where: Where,
        asked: list[int],
        draft: str,
        turns: list[ChatMessage],
        block: str,
        expires: float,
    ) -> int:
        cursor = self.conn.execute(
            "INSERT INTO drafts (connection_id, business, chat_id, asked, draft, turns, block, "
            "state, expires, created) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (
                connection_id,
                where.business,
                where.chat_id,
                json.dumps(asked),
                draft,
                json.dumps(turns, ensure_ascii=False),
                block,
                expires,
                time.time(),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def set_notice(self, draft_id: int, chat_id: int, message_id: int, text: str) -> None:
        self.conn.execute(
            "UPDATE drafts SET notice_chat = ?, notice_id = ?, notice = ? WHERE draft_id = ?",
            (chat_id, message_id, text, draft_id),
        )

    def draft(self, draft_id: int) -> Draft | None:
        row = self.conn.execute(
            f"SELECT {_DRAFT_COLUMNS} FROM drafts WHERE draft_id = ?", (draft_id,)
        ).fetchone()
        return _draft(row) if row else None

    def draft_shown_as(self, chat_id: int, message_id: int) -> Draft | None:
        """The pending draft whose notice is that message of the owner's chat with the bot."""
        row = self.conn.execute(
            f"SELECT {_DRAFT_COLUMNS} FROM drafts WHERE notice_chat = ? AND notice_id = ? "
            "AND state = 'pending'",
            (chat_id, message_id),
        ).fetchone()
        return _draft(row) if row else None

    def pending(self, where: Where | None = None) -> list[Draft]:
        """Drafts waiting for the owner (of one chat, or all), oldest first."""
        if where is None:
            rows = self.conn.execute(
                f"SELECT {_DRAFT_COLUMNS} FROM drafts WHERE state = 'pending' ORDER BY draft_id"
            )
        else:
            rows = self.conn.execute(
                f"SELECT {_DRAFT_COLUMNS} FROM drafts WHERE state = 'pending' AND business = ? "
                "AND chat_id = ? ORDER BY draft_id",
                (where.business, where.chat_id),
            )
        return [_draft(row) for row in rows]

    def claim(self, draft_id: int) -> Draft | None:
        """Take a pending draft to send it; None when it is not pending (sent, dropped, or
        being sent by another press)."""
        return self._move(draft_id, "pending", "sending")

    def release(self, draft_id: int) -> None:
        """A claimed draft that could not be sent waits for the owner again."""
        self._move(draft_id, "sending", "pending")

    def finish(self, draft_id: int, outcome: Outcome, *, claimed: bool = False) -> Draft | None:
        """Close a draft (a pending one, or one `claimed` to send); None when it was not."""
        return self._move(draft_id, "sending" if claimed else "pending", outcome)

    def _move(self, draft_id: int, old: str, new: str) -> Draft | None:
        with self._chat_log.transaction():
            cursor = self.conn.execute(
                "UPDATE drafts SET state = ? WHERE draft_id = ? AND state = ?",
                (new, draft_id, old),
            )
            if cursor.rowcount != 1:
                return None
            return self.draft(draft_id)

    def due(self, now: float) -> list[Draft]:
        """Pending drafts whose reply window has closed."""
        rows = self.conn.execute(
            f"SELECT {_DRAFT_COLUMNS} FROM drafts WHERE state = 'pending' AND expires <= ?",
            (now,),
        )
        return [_draft(row) for row in rows]

    # --- corrections ---------------------------------------------------------------------

    def add_correction(
        self,
        chat_id: int,
        verdict: str,
        turns: list[ChatMessage],
        block: str,
        reply: str,
        sent: str | None,
    ) -> None:
        """The owner's verdict on the twin's `reply` (a draft, or a sample) written after
        `turns` with memory `block`; `sent`: the owner's text instead. All PII-masked by the
        caller."""
        self.conn.execute(
            "INSERT INTO corrections (chat_id, verdict, turns, block, draft, sent, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                chat_id,
                verdict,
                json.dumps(turns, ensure_ascii=False),
                block,
                reply,
                sent,
                time.time(),
            ),
        )

    def corrections(self) -> list[KeptCorrection]:
        """Every correction, oldest first (the preference stage trains on all of them)."""
        rows = self.conn.execute(
            "SELECT correction_id, chat_id, verdict, turns, block, draft, sent FROM corrections "
            "ORDER BY correction_id"
        ).fetchall()
        return [
            KeptCorrection(cid, chat_id, verdict, json.loads(turns), block, draft, sent)
            for cid, chat_id, verdict, turns, block, draft, sent in rows
        ]

    def mark_used(self, correction_ids: list[int]) -> None:
        """These corrections are in an adapter now: no longer waiting."""
        with self._chat_log.transaction():
            self.conn.executemany(
                "UPDATE corrections SET used = 1 WHERE correction_id = ?",
                [(cid,) for cid in correction_ids],
            )

    # --- samples -------------------------------------------------------------------------

    def add_sample(self, turns: list[ChatMessage], reply: str) -> int:
        """A /persona sample reply (masked), kept until the owner rates it."""
        cursor = self.conn.execute(
            "INSERT INTO samples (turns, reply, at) VALUES (?, ?, ?)",
            (json.dumps(turns, ensure_ascii=False), reply, time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def rate_sample(self, sample_id: int, verdict: Literal["liked", "disliked"]) -> bool:
        """The owner's 👍 / 👎 on a sample, kept as a correction; False when it was rated
        already (the first press counts) or is unknown."""
        with self._chat_log.transaction():
            cursor = self.conn.execute(
                "UPDATE samples SET verdict = ? WHERE sample_id = ? AND verdict IS NULL",
                (verdict, sample_id),
            )
            if cursor.rowcount != 1:
                return False
            turns, reply = self.conn.execute(
                "SELECT turns, reply FROM samples WHERE sample_id = ?", (sample_id,)
            ).fetchone()
            self.add_correction(0, verdict, json.loads(turns), "", reply, None)
        return True

    def correction_counts(self) -> dict[str, int]:
        """Corrections by verdict, how many no adapter learned from yet (waiting) and how many
        one did (used: its preference stage trained on them and was kept)."""
        counts = dict.fromkeys(VERDICTS, 0)
        for verdict, n in self.conn.execute(
            "SELECT verdict, count(*) FROM corrections GROUP BY verdict"
        ):
            counts[verdict] = n
        waiting = self.conn.execute("SELECT count(*) FROM corrections WHERE used = 0").fetchone()
        total = sum(counts.values())
        return {
            "total": total,
            "waiting": int(waiting[0]),
            "used": total - int(waiting[0]),
            **counts,
        }


def _connection(row: tuple[Any, ...] | None) -> Connection | None:
    if row is None:
        return None
    connection_id, user_id, user_chat_id, enabled, can_reply = row
    return Connection(connection_id, user_id, user_chat_id, bool(enabled), bool(can_reply))
