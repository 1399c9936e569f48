"""Retraining from the bot: `twin retrain` in a child process, its outcome told to admins.

A child process, not a thread: training holds gigabytes and minutes of CPU or GPU, and must
not share an interpreter (or a crash) with the process that answers messages. The bot keeps
serving meanwhile (unless `[schedule] pause_serving_while_training`) and swaps in the new
adapter when the run promoted one. The nightly schedule (bot.schedule) and /persona train
both start runs here; one runs at a time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bot.context import App, runtime_of
from bot.delivery import tell_admins
from bot.report import loss_chart, run_summary
from trainer.registry import current_version, list_adapters
from twin.core.runs import RunRecord, read_records

if TYPE_CHECKING:
    from bot.context import BotRuntime

log = logging.getLogger(__name__)


def retrain_command(runtime: BotRuntime) -> list[str]:
    command = [sys.executable, "-m", "twin"]
    if runtime.config.source is not None:
        command += ["--config", str(runtime.config.source)]
    return [*command, "retrain"]


def retrain_running(runtime: BotRuntime) -> bool:
    return runtime.retrain is not None and not runtime.retrain.done()


def start_retrain(app: App) -> bool:
    """Start a retrain in the background; False when one is already running."""
    runtime = runtime_of(app)
    if retrain_running(runtime):
        return False
    runtime.retrain = asyncio.create_task(run_retrain(app), name="twin-retrain")
    return True


async def run_retrain(app: App) -> None:
    runtime = runtime_of(app)
    config = runtime.config
    before = {a.version: a for a in list_adapters(config.adapters_dir)}
    previous = before.get(current_version(config.adapters_dir) or "")
    runs_before = len(read_records(config.data_dir))
    pause = config.schedule.pause_serving_while_training
    log.info("retrain started%s", " (serving paused to free memory)" if pause else "")
    if pause:
        await runtime.worker.unload()
    try:
        returncode, stderr = await _run_child(retrain_command(runtime))
    except Exception:  # the child could not even start (out of memory): serve again
        if pause:
            await runtime.worker.load_again()
        raise
    # (Cancelled, not an Exception: the bot is stopping, and the model is not loaded again
    # only to be dropped.)
    if pause:
        await runtime.worker.load_again()
    swap = await runtime.adapters.follow_current()
    every = read_records(config.data_dir)
    records = every[runs_before:]
    if records and _told_already(every[:runs_before], records[-1]):
        # The nights after a rejection skip the same way: the admins heard why (and what would
        # change it) once; the runs are still recorded and `twin status` shows the last.
        log.info("retrain skipped again (%s); not reported again", records[-1].reason)
        return
    if records:
        text = run_summary(records[-1], previous)
    else:  # killed before it could write its record (OOM killer, SIGKILL)
        text = f"Retrain failed: {_death(returncode, stderr)}"
    if swap is not None and swap.trouble:
        text += f"\n{swap.message()}"
    log.info("retrain ended: %s", records[-1].outcome if records else "died")
    adapters = list_adapters(config.adapters_dir)
    trained = [a for a in adapters if a.version not in before]
    chart = loss_chart(trained[-1], adapters) if trained else None
    await tell_admins(app.bot, config.telegram.admins, text, chart=chart)


def _told_already(earlier: list[RunRecord], record: RunRecord) -> bool:
    """A skip for the same reason as the previous run's skip (nothing changed since)."""
    last = earlier[-1] if earlier else None
    return (
        record.outcome == "skipped"
        and last is not None
        and last.outcome == "skipped"
        and last.training_key == record.training_key
    )


# twin's environment variables the retrain child needs: the Telethon login for the nightly
# pull, and the model cache. The others stay with the bot: its token (TWIN_BOT_TOKEN), its
# webhook secret, the serving engine's key; a run that trains never talks to the Bot API or
# to the serving engine. Variables that are not twin's (PATH, HF_HOME, CUDA_...) all go along.
CHILD_VARIABLES = frozenset({"TWIN_API_ID", "TWIN_API_HASH", "TWIN_MODEL_CACHE"})


def child_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """`environment` without the TWIN_* variables a retrain has no use for."""
    return {
        name: value
        for name, value in environment.items()
        if not name.startswith("TWIN_") or name in CHILD_VARIABLES
    }


async def _run_child(command: list[str]) -> tuple[int, str]:
    # Output is not echoed into the bot's log: the child logs no message text, but its
    # samples are printed in training runs by hand, never here.
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=child_environment(os.environ),
    )
    try:
        _, err = await process.communicate()
    except asyncio.CancelledError:  # the bot is stopping: do not leave the trainer behind
        process.terminate()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, err.decode(errors="replace")


def _death(returncode: int, stderr: str) -> str:
    lines = stderr.strip().splitlines()
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}" + (f"; last output: {lines[-1]}" if lines else "")
    return lines[-1] if lines else f"exit status {returncode}"


def last_retrain(runtime: BotRuntime) -> float | None:
    """When the newest adapter was trained (epoch seconds), if any."""
    adapters = list_adapters(runtime.config.adapters_dir)
    return adapters[-1].metrics.created if adapters else None
