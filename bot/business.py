"""Telegram Business: the twin in the owner's own private chats.

The owner connects the bot to their account (Telegram -> Settings -> Telegram Business ->
Chatbots); Telegram then sends the bot the messages of the owner's private chats, and lets it
answer in them as the owner. Only the owner's connection is taken: another account that
connects the bot is refused, nothing of the twin reaches it, and the admins hear of it once.

In a connected chat:
- a friend's message is answered like any other chat's (the same conversation builder, the
  memory of that chat in the store, the same settings), as a draft the owner approves
  (bot.drafts), straight away and paced ("auto"), or not at all ("off");
- a message the owner types there cancels the drafts of that chat and silences the twin there
  for `[business] takeover_minutes`;
- an echo of the twin's own send (`sender_business_bot`) is never a message to answer;
- what is written, edited and deleted joins the store as it happens (bot.live_history).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from telegram import BusinessConnection, Message, Update, User
from telegram.error import TelegramError

from bot import drafts
from bot.as_owner import learn, owner_id, reply_mode, send_as_owner
from bot.business_log import Connection
from bot.chat_log import Where
from bot.context import TwinContext
from bot.delivery import DeliveryFailed, keep_typing, send_with_retry, tell_admins
from bot.messages import text_of
from twin.core.conversation import OWNER, Said
from twin.core.language import phrase

log = logging.getLogger(__name__)


def connection_of(connection: BusinessConnection) -> Connection:
    rights = connection.rights
    return Connection(
        connection_id=connection.id,
        user_id=connection.user.id,
        user_chat_id=connection.user_chat_id,
        enabled=connection.is_enabled,
        can_reply=bool(rights and rights.can_reply),
    )


async def on_connection(update: Update, context: TwinContext) -> None:
    """The owner connected the bot, changed its rights, or disconnected it."""
    connection = update.business_connection
    assert connection is not None
    await _accept(context, connection)


async def _accept(context: TwinContext, connection: BusinessConnection) -> Connection | None:
    """Record the owner's connection (telling the owner when what it allows changed); refuse
    anyone else's. Returns the recorded connection, None when refused."""
    runtime = context.runtime
    if connection.user.id != await asyncio.to_thread(owner_id, runtime.config):
        await _refuse(context, connection.id, connection.user)
        return None
    record = connection_of(connection)
    before = runtime.business.record_connection(record)
    if before is None or _state(before) != _state(record):
        log.info("business connection of the owner: %s", _state(record))
        language = runtime.worker.language
        mode = phrase(language, f"mode_{runtime.config.business.mode}")
        text = phrase(language, f"business_{_state(record)}").format(mode=mode)
        with contextlib.suppress(DeliveryFailed):
            await send_with_retry(context.bot, record.user_chat_id, text=text)
    return record


def _state(connection: Connection) -> str:
    if not connection.enabled:
        return "disabled"
    return "ready" if connection.can_reply else "cannot_reply"


async def _refuse(context: TwinContext, connection_id: str, user: User) -> None:
    runtime = context.runtime
    runtime.refused_connections.add(connection_id)
    log.warning("business connection of user %s refused: not the owner", user.id)
    if runtime.business.first_refusal(user.id):
        await tell_admins(
            context.bot,
            runtime.config.telegram.admins,
            f"User {user.id} connected this bot to their own Telegram Business account. Refused: "
            "the twin speaks only as you, and nothing of it reaches them or their chats. They "
            "can remove it in Telegram -> Settings -> Telegram Business -> Chatbots.",
        )


async def connection_for(context: TwinContext, connection_id: str | None) -> Connection | None:
    """The owner's connection an update came through (asked of Telegram when this bot has not
    seen it yet: the bot was off when it was made, or Telegram issued a new id); None for
    anyone else's, or one Telegram does not know."""
    runtime = context.runtime
    if connection_id is None or connection_id in runtime.refused_connections:
        return None
    known = runtime.business.connection(connection_id)
    if known is not None:
        return known
    try:
        connection = await context.bot.get_business_connection(connection_id)
    except TelegramError as err:
        log.warning("business connection unknown to Telegram (%s): update dropped", err.message)
        return None
    return await _accept(context, connection)


def _where(connection: Connection, message: Message) -> Where:
    return Where(message.chat_id, 0, connection.user_id)


async def _followed_through(context: TwinContext, message: Message) -> Connection | None:
    """The owner's connection a message came through, when its chat is one the twin follows:
    private (groups are not part of Telegram Business) and not in `[business] exclude_chats`."""
    connection = await connection_for(context, message.business_connection_id)
    if connection is None or message.chat.type != "private":
        return None
    if message.chat_id in context.runtime.config.business.exclude_chats:
        return None
    return connection


async def on_business_message(update: Update, context: TwinContext) -> None:
    message = update.business_message
    assert message is not None
    connection = await _followed_through(context, message)
    if connection is None:
        return
    user = message.from_user
    if user is not None and user.id == connection.user_id:
        if message.sender_business_bot is None:
            await _owner_wrote(context, connection, message)
        # else the echo of the twin's own send: kept when it was sent
        return
    await _friend_wrote(context, connection, message)


async def _owner_wrote(context: TwinContext, connection: Connection, message: Message) -> None:
    """The owner answers themselves: their words join the conversation and the store, the
    chat's drafts are dropped, and the twin keeps quiet there for a while."""
    runtime = context.runtime
    where = _where(connection, message)
    # Kept before anything else awaits (an edit of it, handled concurrently, finds it); a
    # voice message, which cannot be edited, once heard. The owner's own words, spoken or
    # typed, are kept unmarked, as they were trained (ingest.dialog).
    heard = await runtime.listener.heard(message, runtime.config, runtime.worker.language)
    text = heard or text_of(message, media=runtime.config.bot.media)
    if text is not None:
        said = Said(OWNER, "", text, message.date.timestamp())
        runtime.chat_log.remember(where, said, message.message_id)
    await learn(runtime, connection, [message], name=None, heard=heard)
    minutes = runtime.config.business.takeover_minutes
    runtime.business.silence(where, time.time() + minutes * 60)
    for draft in runtime.business.pending(where):
        await drafts.close(context, draft.draft_id, "taken_over")


async def _friend_wrote(context: TwinContext, connection: Connection, message: Message) -> None:
    runtime = context.runtime
    where = _where(connection, message)
    user = message.from_user
    heard = await runtime.listener.heard(message, runtime.config, runtime.worker.language)
    text = text_of(message, media=runtime.config.bot.media, heard=heard)
    if text is not None and user is not None:  # kept before anything else awaits, as above
        said = Said(str(user.id), user.first_name, text, message.date.timestamp())
        runtime.chat_log.remember(where, said, message.message_id)
    name = user.full_name if user else None
    await learn(runtime, connection, [message], name=name, heard=heard)
    if text is None or user is None:
        return
    connection_id = message.business_connection_id
    assert connection_id is not None
    sent_at = message.date.timestamp()
    mode = await reply_mode(runtime, connection_id, where, sent_at)
    if mode == "off":
        return
    typing = None
    if mode == "auto":  # a draft may never be sent: the friend sees no "typing…" for it
        typing = asyncio.create_task(
            keep_typing(context.bot, where.chat_id, business=connection_id)
        )
    try:
        reply = await runtime.worker.answer(where, group=False)
    finally:
        if typing is not None:
            typing.cancel()
    if not reply:  # covered by a request already waiting, empty, or the bot stopping
        return
    # The owner may have taken over, or changed the connection, while it was written.
    mode = await reply_mode(runtime, connection_id, where, sent_at)
    if mode == "draft":
        await drafts.offer(context, connection, connection_id, where, reply)
    elif mode == "auto":
        with contextlib.suppress(DeliveryFailed):
            await send_as_owner(context, connection_id, where, reply, paced=True, chosen=False)


async def on_edited(update: Update, context: TwinContext) -> None:
    """An edit in a connected chat: the conversation and the store read the new text."""
    message = update.edited_business_message
    assert message is not None
    connection = await _followed_through(context, message)
    if connection is None:
        return
    runtime = context.runtime
    text = text_of(message, media=runtime.config.bot.media)
    if text is not None:
        runtime.chat_log.edit(_where(connection, message), message.message_id, text)
    if runtime.config.business.learn:
        edited = message.edit_date or message.date
        await runtime.live_history.edit(
            message.chat_id,
            message.message_id,
            message.text or message.caption or "",
            int(edited.timestamp()),
        )


async def on_deleted(update: Update, context: TwinContext) -> None:
    """Messages deleted in a connected chat leave the conversation and the store, and a draft
    answering one of them is dropped."""
    deleted = update.deleted_business_messages
    assert deleted is not None
    connection = await connection_for(context, deleted.business_connection_id)
    if connection is None:
        return
    runtime = context.runtime
    where = Where(deleted.chat.id, 0, connection.user_id)
    ids = list(deleted.message_ids)
    runtime.chat_log.drop(where, ids)
    await runtime.live_history.delete(where.chat_id, ids)
    for draft in runtime.business.pending(where):
        if set(draft.asked) & set(ids):
            await drafts.close(context, draft.draft_id, "deleted")
