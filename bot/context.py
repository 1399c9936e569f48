"""What the bot's handlers share: settings, chat memory, the model worker, background jobs."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from telegram.ext import ContextTypes, Job

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
    retrain_job: Job[Any] | None = None  # the nightly schedule, when one is set

    @property
    def next_retrain(self) -> dt.datetime | None:
        return self.retrain_job.next_t if self.retrain_job is not None else None


def runtime_of(context: ContextTypes.DEFAULT_TYPE) -> BotRuntime:
    runtime: BotRuntime = context.bot_data["twin"]
    return runtime
