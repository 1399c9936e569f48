"""Live history: what the owner and friends write in connected Telegram Business chats joins
the store as it arrives, as an export or a Telethon pull would have put it there.

The same chat ids (a private chat is the friend's user id), the same message ids (Telegram
numbers the owner's messages once, whoever reads them), so a later export of the same chat
adds nothing twice. Edits are applied, deletions honoured. The store is written off the event
loop, one change at a time, in order; while another process holds it (`twin ingest`, a
retrain's import) changes wait in order and are written with the next one, nothing lost.

What is kept is the owner's own words and their friends'; the twin's sends are kept only once
the owner chose them (a draft sent or edited), never its auto replies: the twin does not
learn from itself. `[business] learn = false` keeps nothing, and a chat `[ingest]
include_chats` / `exclude_chats` leave out is not kept either (as an import would keep it,
unused: not at all is what a user who excluded it expects).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from telegram import Message, MessageOriginChannel, MessageOriginChat, MessageOriginUser

from bot.messages import media_type_of
from ingest.selection import ChatSelection
from ingest.store import Chat, Owner, open_store
from ingest.store import Message as StoredMessage
from twin.core.config import IngestConfig
from twin.core.errors import TwinError

log = logging.getLogger(__name__)

PERSONAL_CHAT = "personal_chat"  # Telegram Desktop's word for a private chat, as ingest keeps it


@dataclass(frozen=True)
class _Add:
    chat: Chat
    messages: tuple[StoredMessage, ...]
    owner: Owner  # whose account it is: the store's owner when nothing was imported yet


@dataclass(frozen=True)
class _Edit:
    chat_id: int
    message_id: int
    text: str
    edited: int


@dataclass(frozen=True)
class _Delete:
    chat_id: int
    message_ids: tuple[int, ...]


_Change = _Add | _Edit | _Delete


def stored(message: Message, *, text: str | None = None, heard: str | None = None) -> StoredMessage:
    """A Bot API message as the store keeps it (`text`: what was sent, when the Message
    returned by a send is not at hand; `heard`: what was said in a voice message, which
    takes its placeholder's place)."""
    user = message.from_user
    origin = message.forward_origin
    forwarded = None
    if isinstance(origin, MessageOriginUser):
        forwarded = origin.sender_user.full_name
    elif isinstance(origin, MessageOriginChat):
        forwarded = origin.sender_chat.effective_name or ""
    elif isinstance(origin, MessageOriginChannel):
        forwarded = origin.chat.effective_name or ""
    elif origin is not None:  # a hidden user: only a name
        forwarded = getattr(origin, "sender_user_name", "") or ""
    replied = message.reply_to_message
    return StoredMessage(
        chat_id=message.chat_id,
        message_id=message.message_id,
        date=int(message.date.timestamp()),
        sender_id=user.id if user else None,
        sender_name=user.full_name if user else None,
        kind="message",
        media_type=media_type_of(message),
        text=heard or (text if text is not None else (message.text or message.caption or "")),
        reply_to=replied.message_id if replied else None,
        forwarded_from=forwarded,
        spoken=bool(heard),
    )


class LiveHistory:
    """Writes connected chats' messages into the store, in order, off the event loop."""

    def __init__(
        self,
        store_path: Path,
        lists: Callable[[], IngestConfig],
        on_added: Callable[[], None],
    ) -> None:
        self.store_path = store_path
        self.lists = lists  # the include / exclude lists in force
        self.on_added = on_added  # called after new messages are stored (memory catches up)
        self._waiting: list[_Change] = []
        self._lock = asyncio.Lock()

    @property
    def waiting(self) -> int:
        """Changes not written yet (the store was busy)."""
        return len(self._waiting)

    async def add(self, chat: Chat, messages: list[StoredMessage], owner: Owner) -> None:
        await self._write(_Add(chat, tuple(messages), owner))

    async def edit(self, chat_id: int, message_id: int, text: str, edited: int) -> None:
        await self._write(_Edit(chat_id, message_id, text, edited))

    async def delete(self, chat_id: int, message_ids: list[int]) -> None:
        await self._write(_Delete(chat_id, tuple(message_ids)))

    async def flush(self) -> None:
        """Write what waits (the bot stopping, or a job)."""
        await self._write(None)

    async def _write(self, change: _Change | None) -> None:
        async with self._lock:
            if change is not None:
                self._waiting.append(change)
            if not self._waiting:
                return
            try:
                added = await asyncio.to_thread(self._apply, list(self._waiting))
            except (sqlite3.OperationalError, TwinError) as err:
                # Locked by an import (or a damaged file the owner must move away): the
                # changes wait for the next write, in order.
                log.warning("the store is busy (%s): %d live changes wait", err, len(self._waiting))
                return
            self._waiting.clear()
        if added:
            self.on_added()

    def _apply(self, changes: list[_Change]) -> int:
        """On a worker thread: all of `changes` in one transaction; returns messages added."""
        added = 0
        lists = self.lists()
        with open_store(self.store_path) as store, store.transaction():
            selection = None  # read once a batch adds messages (edits and deletions need none)
            for change in changes:
                if isinstance(change, _Add):
                    if selection is None:
                        if store.owner() is None:  # nothing imported yet: the account is it
                            store.set_owner(change.owner)
                        selection = ChatSelection.load(
                            store, lists.include_chats, lists.exclude_chats
                        )
                    if not selection.selects(change.chat):
                        continue
                    store.save_chat(change.chat)
                    added += store.add_messages(change.messages)
                elif isinstance(change, _Edit):
                    store.edit_message(
                        change.chat_id, change.message_id, change.text, change.edited
                    )
                else:
                    store.delete_messages(change.chat_id, change.message_ids)
        return added
