"""`twin serve`: the Telegram bot that answers as the owner, with the current adapter.

The Application is built once here (`build_application`) and run by `running()`, which
`serve()` and the tests share. Handlers are short; who reaches which handler is decided by the
filters in bot.access; the model runs on the worker's thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator

from telegram import BotCommand, BotCommandScopeChat, Message, Update
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import persona
from bot.access import access_filters
from bot.delivery import DeliveryFailed, keep_typing, send_reply, send_with_retry, tell_admins
from bot.memory import ChatMemory
from bot.retraining import retrain_running
from bot.runtime import BotRuntime, runtime_of
from bot.schedule import schedule_retrain
from bot.worker import ModelWorker
from twin.chat_format import media_placeholder
from twin.config import Config, secret

log = logging.getLogger(__name__)

# 429s are waited out (retry_after) this many times per request before giving up.
RATE_LIMIT_RETRIES = 5
USER_COMMANDS = [BotCommand("reset", "forget this chat's conversation")]
ADMIN_COMMANDS = [
    BotCommand("persona", "status, adapters, retrain, pause, settings, samples"),
    *USER_COMMANDS,
]


def build_application(config: Config, token: str, *, poll_timeout: float = 10.0) -> Application:
    """The bot, wired: Bot API URL, rate limiter, handlers and the adapter reload job."""
    api = config.telegram.api_base_url.rstrip("/")
    app = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=RATE_LIMIT_RETRIES))
        # Handlers wait on the model worker; updates of other chats must not queue behind them.
        .concurrent_updates(True)
        .get_updates_read_timeout(poll_timeout + 5)
        .build()
    )
    memory = ChatMemory(config.data_dir / "bot.db", config.bot.context_messages)
    app.bot_data["twin"] = BotRuntime(config, memory, ModelWorker(config, memory))
    access = access_filters(config.telegram)
    new_messages = filters.UpdateType.MESSAGE
    app.add_handler(
        CommandHandler("persona", persona.command, filters=access.admins & new_messages)
    )
    app.add_handler(CommandHandler("reset", on_reset, filters=access.talkers & new_messages))
    app.add_handler(MessageHandler(access.talkers & new_messages & ~filters.COMMAND, on_message))
    app.add_handler(
        MessageHandler(access.overheard & new_messages & ~filters.COMMAND, on_overheard)
    )
    app.add_handler(MessageHandler(access.strangers & new_messages, on_stranger))
    # Edited messages, channel posts, callback queries and unknown commands match no handler:
    # they are dropped, quietly.
    app.add_error_handler(on_error)
    return app


async def on_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    runtime = runtime_of(context)
    message = update.effective_message
    assert message is not None
    if not remember_message(runtime, message):
        return
    if runtime.memory.paused:
        return
    in_group = message.chat.type != "private"
    await answer_chat(context, message.chat_id, reply_to=message.message_id if in_group else None)


async def on_overheard(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A message in an allowed group, not addressed to the twin: context for later replies.
    (Telegram delivers these only when the bot's privacy mode is off.)"""
    assert update.effective_message is not None
    remember_message(runtime_of(context), update.effective_message)


def remember_message(runtime: BotRuntime, message: Message) -> bool:
    """Add a user's message to its chat's memory; False when there is nothing to answer."""
    text = text_of(message, media=runtime.config.bot.media)
    if text is None:
        return False
    speaker = message.from_user.first_name if message.from_user else ""
    runtime.memory.remember(message.chat_id, "user", text, speaker)
    return True


async def answer_chat(
    context: ContextTypes.DEFAULT_TYPE, chat_id: int, *, reply_to: int | None
) -> None:
    """Ask the worker for this chat's reply (showing "typing…"), send it, remember it."""
    runtime = runtime_of(context)
    typing = asyncio.create_task(keep_typing(context.bot, chat_id))
    try:
        reply = await runtime.worker.answer(chat_id)
    finally:
        typing.cancel()
    if reply is None:  # a request of this chat was already waiting; its reply covers this
        return
    if not reply:
        log.warning("the model produced an empty reply for chat %s; nothing sent", chat_id)
        return
    try:
        await send_reply(context.bot, chat_id, reply, runtime.config.bot, reply_to=reply_to)
    except DeliveryFailed:
        return
    runtime.memory.remember(chat_id, "assistant", reply)


# Bot API message fields -> the store's media types, whose placeholders the twin was trained on.
_MEDIA_FIELDS = {
    "photo": "photo",
    "sticker": "sticker",
    "voice": "voice_message",
    "video_note": "video_message",
    "video": "video_file",
    "animation": "animation",
    "audio": "audio_file",
    "document": "file",
    "location": "location",
    "contact": "contact",
    "poll": "poll",
}


def text_of(message: Message, *, media: str) -> str | None:
    """What the twin reads of a message: its text, a caption, or "[sticker]"-style placeholder
    (when `[bot] media` is "model"); None for what it should not answer at all."""
    text = message.text or message.caption
    if text:
        username = message.get_bot().username
        if username and message.chat.type != "private":
            text = text.replace(f"@{username}", "").strip() or text
        return text
    if media != "model":
        return None
    for attribute, media_type in _MEDIA_FIELDS.items():
        if getattr(message, attribute, None):
            return media_placeholder(media_type)
    return None  # service messages, dice, games...: nothing to answer


async def on_reset(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    message = update.effective_message
    assert message is not None
    forgotten = runtime_of(context).memory.forget(message.chat_id)
    log.info("chat %s: memory cleared (%d messages)", message.chat_id, forgotten)
    with contextlib.suppress(DeliveryFailed):
        await send_with_retry(context.bot, message.chat_id, text="Memory of this chat cleared.")


async def on_stranger(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    runtime = runtime_of(context)
    user = update.effective_user
    if user is None:
        return
    log.info("message from user %s, who is not in allowed_users: not answered", user.id)
    notice = runtime.config.telegram.stranger_reply
    if notice and runtime.memory.first_contact(user.id):
        with contextlib.suppress(DeliveryFailed):
            await send_with_retry(context.bot, user.id, text=notice)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed", update_id, exc_info=context.error)


async def follow_current_adapter(context: ContextTypes.DEFAULT_TYPE) -> None:
    """JobQueue job: a retrain promoted a new adapter? Swap it in; tell admins."""
    runtime = runtime_of(context)
    if retrain_running(runtime):
        return  # the bot's own retrain swaps and reports when it ends
    swap = await runtime.worker.follow_current()
    if swap is not None:
        await tell_admins(context.bot, runtime.config.telegram.admins, swap.message())


async def start_bot(app: Application) -> None:
    runtime: BotRuntime = app.bot_data["twin"]
    await runtime.worker.start()
    swap = await runtime.worker.follow_current()
    if swap is not None and swap.refused:
        await tell_admins(app.bot, runtime.config.telegram.admins, swap.message())
    await register_commands(app)
    assert app.job_queue is not None
    app.job_queue.run_repeating(
        follow_current_adapter, interval=runtime.config.bot.reload_seconds, name="reload"
    )
    schedule_retrain(app)


async def register_commands(app: Application) -> None:
    """Command menus: /reset for everyone, /persona too in each admin's private chat."""
    runtime: BotRuntime = app.bot_data["twin"]
    try:
        await app.bot.set_my_commands(USER_COMMANDS)
        for admin in runtime.config.telegram.admins:
            await app.bot.set_my_commands(ADMIN_COMMANDS, scope=BotCommandScopeChat(admin))
    except TelegramError as err:  # e.g. an admin who never opened the bot: menus are cosmetic
        log.warning("could not register the command menus: %s", err)


async def stop_bot(app: Application) -> None:
    runtime: BotRuntime = app.bot_data["twin"]
    if runtime.retrain is not None:
        runtime.retrain.cancel()
        await asyncio.gather(runtime.retrain, return_exceptions=True)
    await runtime.worker.stop()
    runtime.memory.close()


@contextlib.asynccontextmanager
async def running(app: Application, *, poll_timeout: float = 10.0) -> AsyncIterator[BotRuntime]:
    """The bot receiving updates (long polling, or a webhook when configured) until exit."""
    runtime: BotRuntime = app.bot_data["twin"]
    telegram = runtime.config.telegram
    await app.initialize()
    await start_bot(app)
    assert app.updater is not None
    if telegram.webhook_url:
        await app.updater.start_webhook(
            listen=telegram.webhook_listen,
            port=telegram.webhook_port,
            url_path="telegram",
            webhook_url=telegram.webhook_url,
            secret_token=os.environ.get("TWIN_WEBHOOK_SECRET") or None,
            allowed_updates=Update.ALL_TYPES,
        )
    else:
        await app.updater.start_polling(timeout=int(poll_timeout), allowed_updates=Update.ALL_TYPES)
    await app.start()
    try:
        yield runtime
    finally:
        await app.updater.stop()
        await app.stop()
        await stop_bot(app)
        await app.shutdown()


def serve(config: Config) -> int:
    """`twin serve`: run until SIGINT / SIGTERM."""
    token = secret("TWIN_BOT_TOKEN", "the bot's token from @BotFather")
    app = build_application(config, token)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running(app) as runtime:
            who = runtime.worker.version or "the base model (no adapter yet)"
            log.info("twin is serving %s as @%s; Ctrl-C stops", who, app.bot.username)
            await stop.wait()
        log.info("stopped")

    asyncio.run(main())
    return 0
