"""Drafts: the twin's reply in the owner's chat waits for the owner, who sends, edits or skips it.

The owner gets, in their private chat with the bot, what the friend wrote and the draft, with
three buttons (in the owner's language): Send delivers the draft through the connection; Edit
says to reply to the draft with the text to send instead, and that reply is sent; Skip drops
it. Only the owner's presses count. A draft is sent at most once (bot.business_log moves it
out of "pending" in one checked UPDATE). It expires when Telegram's 24-hour window to reply
closes, when the friend deletes what it answers, when the owner answers in the chat
themselves, or when a newer draft for the same chat replaces it.

Each draft the owner sent, edited or skipped is kept as a correction, PII-masked, for
preference training.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters, Update
from telegram.constants import MessageLimit
from telegram.error import TelegramError
from telegram.ext import filters

from bot.as_owner import REPLY_WINDOW_S, send_as_owner
from bot.business_log import BusinessLog, Connection, Draft, Outcome
from bot.chat_log import Where
from bot.context import BotRuntime, TwinContext
from bot.delivery import DeliveryFailed, send_with_retry
from ingest.pii import PiiScrubber
from ingest.recall import scrubber_for
from ingest.store import open_store
from twin.core.conversation import ChatMessage
from twin.core.language import phrase

log = logging.getLogger(__name__)

# Callback data of the buttons: "draft:send:12", "draft:edit:12", "draft:skip:12".
BUTTON_DATA = re.compile(r"^draft:(send|edit|skip):(\d+)$")
# How often pending drafts are checked for a closed reply window (seconds).
EXPIRY_CHECK_S = 60.0
# The notice quotes at most this much of what the friend wrote (the draft is never cut).
QUOTE_CHARS = 1500


def keyboard(draft_id: int, language: str) -> InlineKeyboardMarkup:
    def button(action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            phrase(language, f"draft_{action}"), callback_data=f"draft:{action}:{draft_id}"
        )

    return InlineKeyboardMarkup([[button("send"), button("skip")], [button("edit")]])


async def offer(
    context: TwinContext, connection: Connection, connection_id: str, where: Where, reply: str
) -> None:
    """Show the owner the draft `reply` to what the friend wrote since the last turn."""
    runtime = context.runtime
    business = runtime.business
    waiting = runtime.chat_log.waiting(where)
    if not waiting:
        return  # the owner answered meanwhile
    expires = max(said.at for _, said in waiting) + REPLY_WINDOW_S
    if expires <= time.time():
        return
    for older in business.pending(where):
        await close(context, older.draft_id, "replaced")
    scrub = (await scrubber(runtime)).scrub
    turns: list[ChatMessage] = [
        {"role": turn["role"], "content": scrub(turn["content"])}
        for turn in runtime.worker.prompt_for(where, False).conversation
        if turn["role"] != "system"
    ]
    recall = runtime.worker.last_recall.get(where)
    asked = [message_id for message_id, _ in waiting if message_id is not None]
    draft_id = business.add_draft(
        connection_id, where, asked, reply, turns, scrub(recall.block) if recall else "", expires
    )
    language = runtime.worker.language
    quote = "\n".join(said.text for _, said in waiting)
    if len(quote) > QUOTE_CHARS:
        quote = "…" + quote[-QUOTE_CHARS:]
    friend = f"{waiting[-1][1].name} ({where.chat_id})"
    text = phrase(language, "draft_notice").format(friend=friend, asked=quote, draft=reply)
    text = text[: MessageLimit.MAX_TEXT_LENGTH]
    try:
        notice = await send_with_retry(
            context.bot,
            connection.user_chat_id,
            text=text,
            reply_markup=keyboard(draft_id, language),
        )
    except DeliveryFailed:
        business.finish(draft_id, "expired")  # the owner never saw it: it cannot be pressed
        return
    business.set_notice(draft_id, notice.chat_id, notice.message_id, text)


async def scrubber(runtime: BotRuntime) -> PiiScrubber:
    """The dataset's PII masking (with the owner's own phone numbers), made once."""
    if runtime.scrubber is None:
        config = runtime.config

        def make() -> PiiScrubber:
            owner = None
            if config.store_path.exists():
                with open_store(config.store_path) as store:
                    owner = store.owner()
            return scrubber_for(config, owner)

        runtime.scrubber = await asyncio.to_thread(make)
    return runtime.scrubber


async def close(context: TwinContext, draft_id: int, outcome: Outcome) -> None:
    """Drop a pending draft (expired, deleted, taken over, replaced) and say so on it."""
    draft = context.runtime.business.finish(draft_id, outcome)
    if draft is not None:
        await _mark(context, draft, f"draft_{outcome}")


async def _mark(context: TwinContext, draft: Draft, key: str, **values: str) -> None:
    """The notice of a draft that is done: what became of it, without buttons."""
    if draft.notice_chat is None or draft.notice_id is None:
        return
    outcome = phrase(context.runtime.worker.language, key).format(**values)
    text = f"{draft.notice}\n\n{outcome}"[: MessageLimit.MAX_TEXT_LENGTH]
    with contextlib.suppress(TelegramError):  # cosmetic: the draft's state is what counts
        await context.bot.edit_message_text(
            text, chat_id=draft.notice_chat, message_id=draft.notice_id
        )


async def deliver(context: TwinContext, draft_id: int, text: str, *, edited: bool) -> str:
    """Send a pending draft (or, `edited`, the owner's text instead) as the owner, once;
    returns what to tell the owner."""
    runtime = context.runtime
    business = runtime.business
    language = runtime.worker.language
    draft = business.claim(draft_id)
    if draft is None:
        return phrase(language, "draft_done")
    if draft.expires <= time.time():
        business.finish(draft_id, "expired", claimed=True)
        await _mark(context, draft, "draft_expired")
        return phrase(language, "draft_expired")
    told = "draft_edited" if edited else "draft_sent"
    why = ""
    try:
        await send_as_owner(
            context, draft.connection_id, draft.where, text, paced=False, chosen=True
        )
    except DeliveryFailed as err:
        why = str(err) or "Telegram refused"
        if not err.sent:  # nothing reached the friend: the owner may try again
            business.release(draft_id)
            return phrase(language, "draft_failed").format(why=why)
        # Part of it did: sending it again would repeat those lines, so it counts as sent.
        told = "draft_partly_sent"
    outcome: Outcome = "edited" if edited else "sent"
    business.finish(draft_id, outcome, claimed=True)
    scrub = (await scrubber(runtime)).scrub
    business.add_correction(
        draft.where.chat_id,
        outcome,
        draft.turns,
        draft.block,
        scrub(draft.draft),
        scrub(text) if edited else None,
    )
    await _mark(context, draft, told, why=why)
    return phrase(language, told).format(why=why)


async def on_press(update: Update, context: TwinContext) -> None:
    """A press of Send, Edit or Skip under a draft."""
    query = update.callback_query
    assert query is not None
    runtime = context.runtime
    language = runtime.worker.language
    match = BUTTON_DATA.match(query.data or "")
    draft = runtime.business.draft(int(match.group(2))) if match else None
    if match is None or draft is None:
        await _answer(query.answer(phrase(language, "draft_done")))
        return
    if query.from_user.id != draft.where.business:
        log.warning("user %s pressed a draft's button: not the owner's", query.from_user.id)
        await _answer(query.answer(phrase(language, "draft_not_yours"), show_alert=True))
        return
    action = match.group(1)
    if action == "edit":
        key = "draft_edit_hint" if draft.state == "pending" else "draft_done"
        await _answer(query.answer(phrase(language, key), show_alert=key == "draft_edit_hint"))
    elif action == "skip":
        skipped = runtime.business.finish(draft.draft_id, "skipped")
        if skipped is None:
            await _answer(query.answer(phrase(language, "draft_done")))
            return
        scrub = (await scrubber(runtime)).scrub
        where, turns, block = skipped.where, skipped.turns, skipped.block
        masked = scrub(skipped.draft)
        runtime.business.add_correction(where.chat_id, "skipped", turns, block, masked, None)
        await _mark(context, skipped, "draft_skipped")
        await _answer(query.answer(phrase(language, "draft_skipped")))
    else:
        told = await deliver(context, draft.draft_id, draft.draft, edited=False)
        await _answer(query.answer(told))


async def _answer(call: object) -> None:
    """Answering a callback query only stops the button's spinner: a failure costs nothing."""
    with contextlib.suppress(TelegramError):
        await call  # type: ignore[misc]


class RepliesToDraft(filters.MessageFilter):
    """A text message that replies to a pending draft's notice: the owner's edit."""

    def __init__(self, business: BusinessLog) -> None:
        super().__init__(name="RepliesToDraft")
        self.business = business

    def filter(self, message: Message) -> bool:
        replied = message.reply_to_message
        return (
            replied is not None
            and bool(message.text)
            and self.business.draft_shown_as(message.chat_id, replied.message_id) is not None
        )


async def on_edit_reply(update: Update, context: TwinContext) -> None:
    """The owner replied to a draft with the text to send instead."""
    message = update.effective_message
    assert message is not None and message.reply_to_message is not None and message.text
    runtime = context.runtime
    draft = runtime.business.draft_shown_as(message.chat_id, message.reply_to_message.message_id)
    user = message.from_user
    if draft is None or user is None or user.id != draft.where.business:
        return
    told = await deliver(context, draft.draft_id, message.text, edited=True)
    with contextlib.suppress(DeliveryFailed):
        await send_with_retry(
            context.bot,
            message.chat_id,
            text=told,
            reply_parameters=ReplyParameters(message.message_id, allow_sending_without_reply=True),
        )


async def expire_drafts(context: TwinContext) -> None:
    """JobQueue job: drafts whose 24-hour reply window closed can no longer be sent."""
    for draft in context.runtime.business.due(time.time()):
        await close(context, draft.draft_id, "expired")
