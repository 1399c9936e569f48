"""The Telethon pull's test doubles: real Telethon TL objects for an owner, two friends, a
bot, a group and a channel, and a scripted client that serves their histories the way
`TelegramClient.iter_messages(entity, min_id=..., reverse=True)` does (ids above min_id,
oldest first) and can fail mid-chat, as flood control or a crash would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from telethon.tl import types as tl

from ingest.store import Store
from ingest.telegram import (
    PullSummary,
    pull_history,
)

OWNER_ID = 1000
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

ME = tl.User(id=OWNER_ID, is_self=True, first_name="Olga", last_name="Owner", phone="15550001")
ALICE = tl.User(id=42, first_name="Alice", last_name="Smith", bot=False)
BOB = tl.User(id=43, first_name="Bob", bot=False)
HELPER_BOT = tl.User(id=44, first_name="Helper", bot=True)
FAMILY = tl.Chat(
    id=77, title="Family", photo=tl.ChatPhotoEmpty(), participants_count=3, date=T0, version=1
)


def channel(channel_id: int, title: str, **flags: Any) -> tl.Channel:
    return tl.Channel(id=channel_id, title=title, photo=tl.ChatPhotoEmpty(), date=T0, **flags)


NEWS = channel(500, "News", broadcast=True)
# The store keys chats by marked ids (ingest.peers), as the Bot API does.
FAMILY_ID = -77
NEWS_ID = -1000000000500


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def message(msg_id: int, peer: Any, **fields: Any) -> tl.Message:
    fields.setdefault("message", f"text {msg_id}")
    return tl.Message(id=msg_id, peer_id=peer, date=at(msg_id), **fields)


def private_history(user: tl.User, ids: range) -> list[tl.Message]:
    """A private chat where the owner writes the even ids and the peer the odd ones."""
    return [message(i, tl.PeerUser(user.id), out=i % 2 == 0) for i in ids]


def document(*attributes: Any, **flags: Any) -> tl.MessageMediaDocument:
    doc = tl.Document(
        id=1,
        access_hash=2,
        file_reference=b"",
        date=T0,
        mime_type="application/octet-stream",
        size=10,
        dc_id=2,
        attributes=list(attributes),
    )
    return tl.MessageMediaDocument(document=doc, **flags)


# --- the client double --------------------------------------------------------------------


@dataclass
class Fault:
    """Raise `error` after `after` messages of a chat's next history read (`times` reads)."""

    after: int
    error: BaseException
    times: int = 1


@dataclass
class FakeClient:
    me: tl.User
    chats: list[tuple[Any, list[Any]]]
    faults: dict[int, Fault] = field(default_factory=dict)
    calls: list[tuple[int, int]] = field(default_factory=list)  # (chat id, min_id)
    # A message's file by message id, for download_media (an exception: the download fails).
    files: dict[int, bytes | BaseException] = field(default_factory=dict)
    downloads: list[int] = field(default_factory=list)  # the message ids downloaded

    async def get_me(self) -> tl.User:
        return self.me

    async def iter_dialogs(self) -> AsyncIterator[SimpleNamespace]:
        for entity, _ in self.chats:
            yield SimpleNamespace(entity=entity)

    async def iter_messages(
        self, entity: Any, min_id: int = 0, reverse: bool = False
    ) -> AsyncIterator[Any]:
        assert reverse, "the pull must read oldest first"
        self.calls.append((entity.id, min_id))
        history = next(h for e, h in self.chats if e is entity)
        fault = self.faults.get(entity.id)
        for served, msg in enumerate(sorted((m for m in history if m.id > min_id), key=_id)):
            if fault is not None and served == fault.after:
                fault.times -= 1
                if fault.times == 0:
                    del self.faults[entity.id]
                raise fault.error
            yield msg

    async def download_media(self, message: Any, file: Any) -> Any:
        assert file is bytes, "the pull keeps a voice message's sound in memory, never on disk"
        self.downloads.append(message.id)
        found = self.files[message.id]
        if isinstance(found, BaseException):
            raise found
        return found

    async def get_messages(self, entity: Any, *, ids: list[int]) -> list[Any]:
        """The messages of those ids, None for one that is not there (deleted), as Telethon."""
        history = {m.id: m for m in next(h for e, h in self.chats if e is entity)}
        return [history.get(i) for i in ids]


def _id(msg: Any) -> int:
    return msg.id


@dataclass
class Recorder:
    """A fake `sleep` and `log`: nothing sleeps for real, every line is kept."""

    sleeps: list[float] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def log(self, line: str) -> None:
        self.lines.append(line)


def pull(client: FakeClient, store: Store, rec: Recorder | None = None, **kw: Any) -> PullSummary:
    rec = rec or Recorder()
    return asyncio.run(pull_history(client, store, sleep=rec.sleep, log=rec.log, **kw))


def stored_ids(store: Store, chat_id: int) -> list[int]:
    return [m.message_id for m in store.messages_of(chat_id)]
