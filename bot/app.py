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
import re
import secrets
import signal
import time
from collections.abc import AsyncIterator

from telegram import BotCommand, BotCommandScopeChat, Message, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    AIORateLimiter,
    ApplicationBuilder,
    BusinessConnectionHandler,
    BusinessMessagesDeletedHandler,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot import business, drafts, persona
from bot.access import access_filters
from bot.adapters import AdapterFollower
from bot.business_log import BusinessLog
from bot.chat_log import ChatLog, Where, bot_db_path
from bot.context import (
    CONTEXT_TYPES,
    App,
    BotRuntime,
    TwinContext,
    attach_runtime,
    runtime_of,
)
from bot.delivery import DeliveryFailed, keep_typing, send_reply, send_with_retry, tell_admins
from bot.live_history import LiveHistory
from bot.messages import text_of
from bot.retraining import retrain_running
from bot.schedule import schedule_retrain
from bot.voice import Listener
from bot.worker import ModelWorker
from twin.core.config import Config, secret
from twin.core.conversation import OWNER, Said
from twin.core.errors import TwinError
from twin.core.language import localized, phrase

log = logging.getLogger(__name__)

# 429s are waited out (retry_after) this many times per request before giving up.
RATE_LIMIT_RETRIES = 5
USER_COMMANDS = [BotCommand("reset", "forget this chat's conversation")]
ADMIN_COMMANDS = [
    BotCommand("persona", "status, adapters, retrain, pause, settings, samples"),
    *USER_COMMANDS,
]


def build_application(config: Config, token: str, *, poll_timeout: float = 10.0) -> App:
    """The bot, wired: Bot API URL, rate limiter, handlers and the adapter reload job."""
    api = config.telegram.api_root
    app = (
        ApplicationBuilder()
        .token(token)
        .context_types(CONTEXT_TYPES)
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=RATE_LIMIT_RETRIES))
        # Handlers wait on the model worker; updates of other chats must not queue behind them.
        .concurrent_updates(True)
        .get_updates_read_timeout(poll_timeout + 5)
        .build()
    )
    chat_log = ChatLog(bot_db_path(config), config.bot.context_messages)
    worker = ModelWorker(config, chat_log)
    business_log = BusinessLog(chat_log)
    live_history = LiveHistory(
        config.store_path, lambda: worker.config.ingest, worker.history_added
    )
    runtime = BotRuntime(
        chat_log, worker, AdapterFollower(worker), business_log, live_history, Listener()
    )
    attach_runtime(app, runtime)
    access = access_filters(config.telegram)
    new_messages = filters.UpdateType.MESSAGE
    app.add_handler(
        CommandHandler("persona", persona.command, filters=access.admins & new_messages)
    )
    app.add_handler(CommandHandler("reset", on_reset, filters=access.resetters & new_messages))
    # Telegram Business (bot.business): the owner's own chats, and the owner's drafts.
    app.add_handler(BusinessConnectionHandler(business.on_connection))
    app.add_handler(
        MessageHandler(filters.UpdateType.BUSINESS_MESSAGE, business.on_business_message)
    )
    app.add_handler(MessageHandler(filters.UpdateType.EDITED_BUSINESS_MESSAGE, business.on_edited))
    app.add_handler(BusinessMessagesDeletedHandler(business.on_deleted))
    app.add_handler(CallbackQueryHandler(drafts.on_press, pattern=drafts.BUTTON_DATA))
    app.add_handler(CallbackQueryHandler(persona.on_rating, pattern=persona.RATING_DATA))
    # Before on_message: the owner's reply to a draft is the text to send, not a chat message.
    replies_to_draft = filters.ChatType.PRIVATE & drafts.RepliesToDraft(business_log)
    app.add_handler(MessageHandler(new_messages & replies_to_draft, drafts.on_edit_reply))
    app.add_handler(MessageHandler(access.talkers & new_messages & ~filters.COMMAND, on_message))
    app.add_handler(
        MessageHandler(access.overheard & new_messages & ~filters.COMMAND, on_overheard)
    )
    app.add_handler(MessageHandler(access.strangers & new_messages, on_stranger))
    # Edited messages, channel posts, other callback queries and unknown commands match no
    # handler: they are dropped, quietly.
    app.add_error_handler(on_error)
    return app


async def on_message(update: Update, context: TwinContext) -> None:
    runtime = context.runtime
    message = update.effective_message
    assert message is not None
    if not await remember_message(runtime, message):
        return
    if runtime.chat_log.paused:
        return
    in_group = message.chat.type != "private"
    await answer(context, message, reply_to=message.message_id if in_group else None)


async def on_overheard(update: Update, context: TwinContext) -> None:
    """A message in an allowed group the twin does not answer: context for later replies.
    (Telegram delivers those not addressed to the bot only when its privacy mode is off.)"""
    assert update.effective_message is not None
    await remember_message(context.runtime, update.effective_message)


def where_of(message: Message) -> Where:
    """The conversation a message belongs to: its chat, or its topic in a forum group."""
    thread = message.message_thread_id if message.is_topic_message else None
    return Where(message.chat_id, thread or 0)


async def remember_message(runtime: BotRuntime, message: Message) -> bool:
    """Add a user's message to its conversation's chat log (a voice message as what was said
    in it); False when there is nothing to answer. Speakers are kept by user id; the first
    name is only the prefix groups show."""
    heard = await runtime.listener.heard(message, runtime.config, runtime.worker.language)
    text = text_of(message, media=runtime.config.bot.media, heard=heard)
    if text is None:
        return False
    user = message.from_user
    speaker = str(user.id) if user else f"chat:{message.chat_id}"
    name = user.first_name if user else (message.chat.title or "")
    runtime.chat_log.remember(
        where_of(message), Said(speaker, name, text, message.date.timestamp())
    )
    return True


async def answer(context: TwinContext, message: Message, *, reply_to: int | None) -> None:
    """Ask the worker for this conversation's reply (showing "typing…"), send it, log it."""
    runtime = context.runtime
    where = where_of(message)
    thread = where.thread_id or None
    typing = asyncio.create_task(keep_typing(context.bot, where.chat_id, thread))
    try:
        reply = await runtime.worker.answer(where, group=message.chat.type != "private")
    finally:
        typing.cancel()
    if reply is None:  # covered by a request already waiting, or the bot is stopping
        return
    if not reply:
        log.warning("no reply for chat %s (empty, or the prompt did not fit)", where.chat_id)
        return
    try:
        await send_reply(
            context.bot, where.chat_id, reply, runtime.config.bot, reply_to=reply_to, thread=thread
        )
    except DeliveryFailed:
        return
    runtime.chat_log.remember(where, Said(OWNER, "", reply, time.time()))


async def on_reset(update: Update, context: TwinContext) -> None:
    message = update.effective_message
    assert message is not None
    where = where_of(message)
    forgotten = context.runtime.chat_log.forget(where)
    log.info("chat %s: chat log cleared (%d messages)", where.chat_id, forgotten)
    with contextlib.suppress(DeliveryFailed):
        await send_with_retry(
            context.bot,
            where.chat_id,
            text=phrase(context.runtime.worker.language, "memory_cleared"),
            message_thread_id=where.thread_id or None,
        )


async def on_stranger(update: Update, context: TwinContext) -> None:
    runtime = context.runtime
    user = update.effective_user
    if user is None:
        return
    log.info("message from user %s, who is not in allowed_users: not answered", user.id)
    notice = localized(
        runtime.config.telegram.stranger_reply, "stranger_reply", runtime.worker.language
    )
    if notice and runtime.chat_log.first_contact(user.id):
        with contextlib.suppress(DeliveryFailed):
            await send_with_retry(context.bot, user.id, text=notice)


async def on_error(update: object, context: TwinContext) -> None:
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed", update_id, exc_info=context.error)


async def follow_current_adapter(context: TwinContext) -> None:
    """JobQueue job: a retrain promoted a new adapter? Swap it in; tell admins."""
    runtime = context.runtime
    if retrain_running(runtime):
        return  # the bot's own retrain swaps and reports when it ends
    swap = await runtime.adapters.follow_current()
    if swap is not None:
        await tell_admins(context.bot, runtime.config.telegram.admins, swap.message())


async def start_bot(app: App) -> None:
    runtime = runtime_of(app)

    async def tell(problem: str) -> None:
        await tell_admins(app.bot, runtime.config.telegram.admins, problem)

    runtime.worker.on_problem = tell
    await runtime.worker.start()
    # config.toml was checked with an estimate; the served tokenizer has the last word, so a
    # prompt that cannot be served stops `twin serve` here rather than silencing every chat.
    await runtime.worker.check_prompt_fits(runtime.config)
    swap = await runtime.adapters.follow_current()
    if swap is not None and swap.trouble:
        await tell_admins(app.bot, runtime.config.telegram.admins, swap.message())
    await register_commands(app)
    assert app.job_queue is not None
    app.job_queue.run_repeating(
        follow_current_adapter, interval=runtime.config.bot.reload_seconds, name="reload"
    )
    app.job_queue.run_repeating(
        drafts.expire_drafts, interval=drafts.EXPIRY_CHECK_S, first=0, name="drafts"
    )
    app.job_queue.run_repeating(write_live_history, interval=LIVE_FLUSH_S, name="live history")
    schedule_retrain(app)


# Live history that waited for a busy store is written at the next change, or at this pace.
LIVE_FLUSH_S = 60.0


async def write_live_history(context: TwinContext) -> None:
    await context.runtime.live_history.flush()


async def register_commands(app: App) -> None:
    """Command menus: /reset for everyone, /persona too in each admin's private chat."""
    runtime = runtime_of(app)
    try:
        await app.bot.set_my_commands(USER_COMMANDS)
        for admin in runtime.config.telegram.admins:
            await app.bot.set_my_commands(ADMIN_COMMANDS, scope=BotCommandScopeChat(admin))
    except TelegramError as err:  # e.g. an admin who never opened the bot: menus are cosmetic
        log.warning("could not register the command menus: %s", err)


async def stop_bot(app: App) -> None:
    runtime = runtime_of(app)
    if runtime.retrain is not None:
        runtime.retrain.cancel()
        await asyncio.gather(runtime.retrain, return_exceptions=True)
    await runtime.worker.stop()
    runtime.listener.close()
    await runtime.live_history.flush()
    if runtime.live_history.waiting:
        log.error(
            "%d live history changes were not written: the store stayed busy",
            runtime.live_history.waiting,
        )
    runtime.chat_log.close()


@contextlib.asynccontextmanager
async def running(app: App, *, poll_timeout: float = 10.0) -> AsyncIterator[BotRuntime]:
    """The bot receiving updates (long polling, or a webhook when configured) until exit."""
    runtime = runtime_of(app)
    telegram = runtime.config.telegram
    try:
        await app.initialize()
    except InvalidToken:
        # PTB's own message quotes the token: never let it reach a log or a terminal.
        raise TwinError(
            "Telegram rejected TWIN_BOT_TOKEN: check it (from @BotFather, /mybots -> API Token)"
        ) from None
    try:
        await start_bot(app)
    except BaseException:
        await stop_bot(app)
        await app.shutdown()
        raise
    assert app.updater is not None
    if telegram.webhook_url:
        await app.updater.start_webhook(
            listen=telegram.webhook_listen,
            port=telegram.webhook_port,
            url_path="telegram",
            webhook_url=telegram.webhook_url,
            secret_token=webhook_secret(),
            allowed_updates=Update.ALL_TYPES,
        )
    else:
        await app.updater.start_polling(timeout=int(poll_timeout), allowed_updates=Update.ALL_TYPES)
    await app.start()
    try:
        yield runtime
    finally:
        runtime.worker.interrupt()  # handlers waiting on a reply finish now, not after it
        await app.updater.stop()
        await app.stop()
        await stop_bot(app)
        await app.shutdown()


def webhook_secret() -> str:
    """The secret Telegram sends with every webhook update (X-Telegram-Bot-Api-Secret-Token);
    updates without it are refused. TWIN_WEBHOOK_SECRET when set (a fixed one survives
    restarts behind a proxy that checks it too), else a fresh random one, registered with
    Telegram by setWebhook at every start: a webhook is never open to forged updates."""
    chosen = os.environ.get("TWIN_WEBHOOK_SECRET", "").strip()
    if chosen and not _WEBHOOK_SECRET.fullmatch(chosen):
        # Telegram's setWebhook refuses it; say so before the model loads, without the value.
        raise TwinError(
            "TWIN_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
            "(Telegram's rule for a webhook secret)"
        )
    return chosen or secrets.token_urlsafe(32)


_WEBHOOK_SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


def serve(config: Config) -> int:
    """`twin serve`: run until SIGINT / SIGTERM."""
    token = secret("TWIN_BOT_TOKEN", "the bot's token from @BotFather")
    if config.telegram.webhook_url:
        webhook_secret()  # a secret Telegram would refuse stops here, before the model loads
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
