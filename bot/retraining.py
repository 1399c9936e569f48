"""Retraining from the bot: `twin retrain` in a child process, its outcome told to admins.

A child process, not a thread: training holds gigabytes and minutes of CPU or GPU, and must
not share an interpreter (or a crash) with the process that answers messages. The bot keeps
serving meanwhile and swaps in the new adapter when the run promoted one.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TYPE_CHECKING

from bot.delivery import tell_admins
from trainer.registry import current_version, list_adapters

if TYPE_CHECKING:
    from telegram.ext import Application

    from bot.runtime import BotRuntime

log = logging.getLogger(__name__)


def retrain_command(runtime: BotRuntime) -> list[str]:
    command = [sys.executable, "-m", "twin"]
    if runtime.config.source is not None:
        command += ["--config", str(runtime.config.source)]
    return [*command, "retrain"]


def start_retrain(app: Application) -> bool:
    """Start a retrain in the background; False when one is already running."""
    runtime: BotRuntime = app.bot_data["twin"]
    if runtime.retrain is not None and not runtime.retrain.done():
        return False
    runtime.retrain = asyncio.create_task(run_retrain(app), name="twin-retrain")
    return True


async def run_retrain(app: Application) -> None:
    runtime: BotRuntime = app.bot_data["twin"]
    admins = runtime.config.telegram.admins
    before = current_version(runtime.config.adapters_dir)
    started = time.monotonic()
    log.info("retrain started")
    process = await asyncio.create_subprocess_exec(
        *retrain_command(runtime),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await process.communicate()
    except asyncio.CancelledError:  # the bot is stopping: do not leave the trainer behind
        process.terminate()
        await process.wait()
        raise
    minutes = (time.monotonic() - started) / 60
    if process.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines() or ["(no output)"]
        log.error("retrain failed (exit %s)", process.returncode)
        await tell_admins(
            app.bot,
            admins,
            f"Retrain failed after {minutes:.1f} min (exit {process.returncode}): {lines[-1]}",
        )
        return
    summary = out.decode(errors="replace").strip().splitlines() or ["(no output)"]
    swap = await runtime.worker.follow_current()
    after = current_version(runtime.config.adapters_dir)
    text = f"Retrain finished in {minutes:.1f} min.\n{summary[-1]}"
    if swap is not None:
        text += f"\n{swap.message()}"
    elif after == before:
        text += f"\nStill serving {before or 'the base model'}."
    log.info("retrain finished: %s", "new adapter" if after != before else "no change")
    await tell_admins(app.bot, admins, text)


def last_retrain(runtime: BotRuntime) -> float | None:
    """When the newest adapter was trained (epoch seconds), if any."""
    adapters = list_adapters(runtime.config.adapters_dir)
    return float(adapters[-1].metrics.get("created", 0)) if adapters else None
