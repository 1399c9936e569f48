"""Getting a reply out: one message per line, paced like typing, retried until it lands.

Flood limits are PTB's AIORateLimiter's job (it waits out a 429's retry_after); this module
retries what the rate limiter does not: timeouts, dropped connections and 5xx answers, with
exponential backoff (tenacity). A reply that still cannot be sent is logged with the chat id,
never with its text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from telegram import Bot, Message, ReplyParameters
from telegram.constants import ChatAction, MessageLimit
from telegram.error import BadRequest, NetworkError, TelegramError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from twin.core.config import BotConfig

log = logging.getLogger(__name__)

SEND_ATTEMPTS = 6
RETRY_WAIT = wait_exponential(multiplier=0.5, max=8)  # 0.5, 1, 2, 4, 8 s: ~15 s bridged
TYPING_EVERY = 4.0  # Telegram shows "typing…" for 5 s after each chat action
MAX_CAPTION = MessageLimit.CAPTION_LENGTH


class DeliveryFailed(Exception):
    """A message that could not be delivered; the text is Telegram's reason (no content).
    `sent`: the lines of a reply that did go out before it (bot.delivery.send_reply)."""

    def __init__(self, reason: str, sent: list[Message] | None = None) -> None:
        super().__init__(reason)
        self.sent = sent or []


def _transient(err: BaseException) -> bool:
    # BadRequest is a NetworkError subclass in PTB, but retrying a bad request cannot help.
    return isinstance(err, NetworkError) and not isinstance(err, BadRequest)


async def send_with_retry(bot: Bot, chat_id: int, **kwargs: Any) -> Message:
    """sendMessage with retries; raises DeliveryFailed when it could not be delivered."""
    sent: Message = await _retrying(chat_id, lambda: bot.send_message(chat_id=chat_id, **kwargs))
    return sent


async def send_photo_with_retry(bot: Bot, chat_id: int, png: bytes, caption: str) -> None:
    await _retrying(
        chat_id,
        lambda: bot.send_photo(chat_id=chat_id, photo=png, caption=caption[:MAX_CAPTION]),
    )


async def send_charts(bot: Bot, chat_id: int, charts: Sequence[bytes], text: str) -> None:
    """PNG charts, the first with `text` as its caption (cut to Telegram's limit; a longer
    text follows the charts in full). Raises DeliveryFailed at the first that does not land."""
    for n, chart in enumerate(charts):
        await send_photo_with_retry(bot, chat_id, chart, text if n == 0 else "")
    if len(text) > MAX_CAPTION:
        await send_with_retry(bot, chat_id, text=text)


async def _retrying(chat_id: int, send: Callable[[], Awaitable[Any]]) -> Any:
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(SEND_ATTEMPTS),
            wait=RETRY_WAIT,
            reraise=True,
        ):
            with attempt:
                return await send()
    except TelegramError as err:
        log.error("could not send a message to chat %s: %s", chat_id, type(err).__name__)
        raise DeliveryFailed(err.message) from err
    raise AssertionError("tenacity reraises the last error")  # pragma: no cover


async def tell_admins(
    bot: Bot, admins: tuple[int, ...], text: str, *, chart: bytes | None = None
) -> None:
    """Alerts and reports for the owner (with a PNG chart when given, the text then goes in
    its caption and in full after it if longer); an admin who never opened the bot is skipped."""
    for admin in admins:
        with contextlib.suppress(DeliveryFailed):
            if chart is None:
                await send_with_retry(bot, admin, text=text)
            else:
                await send_charts(bot, admin, [chart], text)


def reply_messages(reply: str) -> list[str]:
    """The messages a reply goes out as: its non-empty lines, each cut to Telegram's limit."""
    size = MessageLimit.MAX_TEXT_LENGTH
    return [
        line[i : i + size]
        for line in (raw.strip() for raw in reply.splitlines())
        if line
        for i in range(0, len(line), size)
    ]


def line_pause(line: str, bot_config: BotConfig) -> float:
    return min(len(line) * bot_config.line_pause_per_char, bot_config.max_line_pause)


async def send_reply(
    bot: Bot,
    chat_id: int,
    reply: str,
    bot_config: BotConfig,
    *,
    reply_to: int | None = None,
    thread: int | None = None,
    business: str | None = None,
    paced: bool = False,
) -> list[Message]:
    """Send `reply` line by line (into forum topic `thread` when set; as the owner through
    business connection `business` when set); `paced`: the first line too waits as long as
    typing it would take, as a person answers. Returns the messages sent; raises
    DeliveryFailed when a line could not be delivered (with the lines sent before it)."""
    sent = []
    for n, line in enumerate(reply_messages(reply)):
        if (n > 0 or paced) and bot_config.line_pause_per_char > 0:
            await send_typing(bot, chat_id, thread, business)
            await asyncio.sleep(line_pause(line, bot_config))
        extra: dict[str, Any] = {"message_thread_id": thread}
        if business is not None:
            extra["business_connection_id"] = business
        if n == 0 and reply_to is not None:
            extra["reply_parameters"] = ReplyParameters(reply_to, allow_sending_without_reply=True)
        try:
            sent.append(await send_with_retry(bot, chat_id, text=line, **extra))
        except DeliveryFailed as err:
            raise DeliveryFailed(str(err), sent) from err.__cause__
    return sent


async def send_typing(
    bot: Bot, chat_id: int, thread: int | None = None, business: str | None = None
) -> None:
    # Cosmetic: a failed chat action must never cost a reply.
    with contextlib.suppress(TelegramError):
        await bot.send_chat_action(
            chat_id=chat_id,
            action=ChatAction.TYPING,
            message_thread_id=thread,
            business_connection_id=business,
        )


async def keep_typing(
    bot: Bot, chat_id: int, thread: int | None = None, business: str | None = None
) -> None:
    """Show "typing…" (in the topic being answered; in the owner's chat through a business
    connection) until cancelled, while the model works."""
    while True:
        await send_typing(bot, chat_id, thread, business)
        await asyncio.sleep(TYPING_EVERY)
