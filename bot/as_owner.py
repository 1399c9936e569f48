"""Speaking as the owner in their own chats (Telegram Business): who the owner is, whether the
twin may answer in a chat now, and sending through the connection.

A reply goes out through the connection id of the message it answers (Telegram may issue a new
id when the owner changes the bot's settings). What is sent joins the chat's conversation; it
joins the store (what the twin learns from) only when the owner chose the words: a draft the
owner sent or edited, never an auto reply.
"""

from __future__ import annotations

import asyncio
import time

from telegram import Message

from bot.business_log import Connection, Mode
from bot.chat_log import Where
from bot.context import BotRuntime, TwinContext
from bot.delivery import DeliveryFailed, send_reply
from bot.live_history import PERSONAL_CHAT, stored
from bot.messages import media_type_of
from ingest.store import Chat, Owner, open_store
from twin.core.config import Config
from twin.core.conversation import OWNER, Said

# Telegram lets a business bot answer a message for this long after it arrived.
REPLY_WINDOW_S = 24 * 3600


def owner_id(config: Config) -> int | None:
    """The owner's user id: the store's, or before any import the first of the admins."""
    if config.store_path.exists():
        with open_store(config.store_path) as store:
            owner = store.owner()
        if owner is not None and owner.user_id is not None:
            return owner.user_id
    return config.telegram.admins[0] if config.telegram.admins else None


def is_contact(config: Config, chat_id: int) -> bool:
    """Someone the owner knows: listed in config.toml, or written to by the owner (the store).
    The Bot API does not tell a bot who is in the owner's contacts."""
    telegram = config.telegram
    if chat_id in telegram.allowed_users or chat_id in telegram.admins:
        return True
    if not config.store_path.exists():
        return False
    with open_store(config.store_path) as store:
        return store.owner_wrote_in(chat_id)


async def reply_mode(runtime: BotRuntime, connection_id: str, where: Where, sent_at: float) -> Mode:
    """How the twin answers in this chat now: "off" while replies are paused, the connection
    is off or may not reply, the owner took the chat over, or the reply window has closed;
    "auto" only for a contact (unless `[business] auto_non_contacts`)."""
    config = runtime.config
    business = runtime.business
    connection = business.connection(connection_id)
    now = time.time()
    if (
        runtime.chat_log.paused
        or connection is None
        or not connection.usable
        or business.silent_until(where) > now
        or sent_at + REPLY_WINDOW_S <= now
    ):
        return "off"
    mode = business.chat_mode(where) or config.business.mode
    if (
        mode == "auto"
        and not config.business.auto_non_contacts
        and not await asyncio.to_thread(is_contact, config, where.chat_id)
    ):
        return "draft"
    return mode


async def learn(
    runtime: BotRuntime,
    connection: Connection,
    messages: list[Message],
    *,
    name: str | None,
    sender: int | None = None,
    heard: str | None = None,
) -> None:
    """Messages of a connected chat into the store (when `[business] learn`); `sender`: whose
    words they are when not the message's own sender (the owner's, for the twin's sends);
    `heard`: what was said in the one voice message given, kept as its text."""
    # A service message, a dice...: neither words nor media, nothing a dataset could use.
    messages = [m for m in messages if m.text or m.caption or media_type_of(m)]
    if not runtime.config.business.learn or not messages:
        return
    chat = messages[0].chat
    # The chat is the friend's: a send's Message names the chat by the friend too.
    kept = Chat(chat.id, chat.effective_name or name, PERSONAL_CHAT)
    rows = [stored(message, heard=heard) for message in messages]
    if sender is not None:
        rows = [
            row._replace(
                sender_id=sender, sender_name=row.sender_name if row.sender_id == sender else None
            )
            for row in rows
        ]
    await runtime.live_history.add(kept, rows, Owner(connection.user_id))


async def send_as_owner(
    context: TwinContext,
    connection_id: str,
    where: Where,
    reply: str,
    *,
    paced: bool,
    chosen: bool,
) -> None:
    """Send `reply` in the owner's chat as the owner (`paced`: after typing it, as a person
    would); `chosen`: the owner chose the words, so they are learned from. Raises
    DeliveryFailed (with the lines that went out before the failure)."""
    runtime = context.runtime
    try:
        sent = await send_reply(
            context.bot,
            where.chat_id,
            reply,
            runtime.config.bot,
            business=connection_id,
            paced=paced,
        )
    except DeliveryFailed as err:
        await _said(runtime, connection_id, where, err.sent, chosen=chosen)
        raise
    await _said(runtime, connection_id, where, sent, chosen=chosen)


async def _said(
    runtime: BotRuntime, connection_id: str, where: Where, sent: list[Message], *, chosen: bool
) -> None:
    """What went out (a whole reply, or the lines before a failure) is what the friend read:
    it joins the conversation, and the store when the owner chose it."""
    if not sent:
        return
    text = "\n".join(message.text or "" for message in sent)
    runtime.chat_log.remember(where, Said(OWNER, "", text, time.time()), sent[0].message_id)
    connection = runtime.business.connection(connection_id)
    if chosen and connection is not None:
        await learn(runtime, connection, sent, name=None, sender=connection.user_id)
