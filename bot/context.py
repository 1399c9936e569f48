"""What the bot's handlers share, typed: python-telegram-bot's ContextTypes with a custom
context whose `runtime` is the bot's state (as in PTB's examples/contexttypesbot.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from telegram.ext import Application, CallbackContext, ContextTypes, ExtBot, Job

from bot.adapters import AdapterFollower
from bot.business_log import BusinessLog
from bot.chat_log import ChatLog
from bot.live_history import LiveHistory
from bot.voice import Listener
from bot.worker import ModelWorker
from ingest.pii import PiiScrubber
from twin.core.config import Config

_RUNTIME = "twin"


@dataclass
class BotRuntime:
    chat_log: ChatLog  # data_dir/bot.db
    worker: ModelWorker
    adapters: AdapterFollower
    business: BusinessLog  # Telegram Business's tables of bot.db
    live_history: LiveHistory  # connected chats' messages into the store
    listener: Listener  # voice messages as words
    started: float = field(default_factory=time.time)
    retrain: asyncio.Task[None] | None = None
    retrain_job: Job[Any] | None = None  # the nightly schedule, when one is set
    # /persona facts: the last listing, and what it was made from (bot.persona.facts_key);
    # mined again only when that changed, one mining at a time.
    facts_listing: tuple[object, str] | None = None
    facts_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Business connection ids found to be someone else's: their updates are dropped unread.
    refused_connections: set[str] = field(default_factory=set)
    scrubber: PiiScrubber | None = None  # corrections' PII masking (bot.drafts), made once

    @property
    def config(self) -> Config:
        """The config in force: the worker's, which admins' settings replace (one copy)."""
        return self.worker.config

    @property
    def next_retrain(self) -> dt.datetime | None:
        return self.retrain_job.next_t if self.retrain_job is not None else None


class TwinContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """The context every handler and job of twin's bot receives."""

    @property
    def runtime(self) -> BotRuntime:
        return runtime_of(self.application)


CONTEXT_TYPES = ContextTypes(context=TwinContext)
App = Application[Any, Any, Any, Any, Any, Any]


def attach_runtime(app: App, runtime: BotRuntime) -> None:
    app.bot_data[_RUNTIME] = runtime


def runtime_of(app: App) -> BotRuntime:
    runtime: BotRuntime = app.bot_data[_RUNTIME]
    return runtime
