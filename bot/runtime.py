"""What the bot's handlers share: settings, chat memory, the model worker, background jobs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from telegram.ext import ContextTypes

from bot.memory import ChatMemory
from bot.worker import ModelWorker
from twin.config import Config


@dataclass
class BotRuntime:
    config: Config  # replaced when an admin changes a setting
    memory: ChatMemory
    worker: ModelWorker
    started: float = field(default_factory=time.time)
    retrain: asyncio.Task[None] | None = None
    next_retrain: float | None = None  # epoch seconds, when a schedule is set


def runtime_of(context: ContextTypes.DEFAULT_TYPE) -> BotRuntime:
    runtime: BotRuntime = context.bot_data["twin"]
    return runtime
