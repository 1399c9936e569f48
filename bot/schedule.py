"""The nightly retrain inside `twin serve`: PTB's JobQueue (APScheduler) on a cron trigger.

Coalesced and one at a time: a fire while a run is still going is skipped, and fires missed
while the process was down (the machine was off at 3 am) become one run at the next start.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from typing import TYPE_CHECKING

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from bot.context import App, TwinContext, runtime_of
from bot.retraining import start_retrain
from trainer.registry import list_adapters
from twin.core.config import ScheduleConfig
from twin.core.runs import read_records

if TYPE_CHECKING:
    from bot.context import BotRuntime

log = logging.getLogger(__name__)

CATCH_UP_DELAY = 30.0  # seconds after start before a missed run begins: let the bot settle


def cron_trigger(schedule_config: ScheduleConfig) -> CronTrigger | None:
    if not schedule_config.retrain_cron:
        return None
    zone = zoneinfo.ZoneInfo(schedule_config.timezone) if schedule_config.timezone else None
    return CronTrigger.from_crontab(schedule_config.retrain_cron, timezone=zone)


def schedule_retrain(
    app: App, trigger: BaseTrigger | None = None, *, catch_up_delay: float = CATCH_UP_DELAY
) -> None:
    """Put the retrain on the JobQueue (`trigger` defaults to `[schedule] retrain_cron`)."""
    runtime = runtime_of(app)
    trigger = trigger or cron_trigger(runtime.config.schedule)
    if trigger is None:
        log.info("nightly retrain is off ([schedule] retrain_cron is empty)")
        return
    assert app.job_queue is not None
    runtime.retrain_job = app.job_queue.run_custom(
        scheduled_retrain,
        job_kwargs={"trigger": trigger, "coalesce": True, "max_instances": 1},
        name="retrain",
    )
    last = last_refresh(runtime)
    if last is not None and missed_fire(trigger, last, dt.datetime.now(dt.UTC)):
        log.info("a scheduled retrain was missed while twin serve was down: running it now")
        app.job_queue.run_once(scheduled_retrain, when=catch_up_delay, name="missed retrain")


def missed_fire(trigger: BaseTrigger, last: dt.datetime, now: dt.datetime) -> bool:
    """Whether the trigger should have fired between the last refresh and now."""
    # The first fire strictly after `last` (a run started by the 03:00 fire began at 03:00).
    due = trigger.get_next_fire_time(None, last + dt.timedelta(seconds=1))
    return due is not None and due <= now


def last_refresh(runtime: BotRuntime) -> dt.datetime | None:
    """When the twin was last retrained: the newest run record or adapter, if any."""
    config = runtime.config
    times = [
        dt.datetime.strptime(r.started[:15], "%Y%m%d-%H%M%S").replace(tzinfo=dt.UTC)
        for r in read_records(config.data_dir)
    ]
    times += [
        dt.datetime.fromtimestamp(a.metrics.created, dt.UTC)
        for a in list_adapters(config.adapters_dir)
    ]
    return max(times) if times else None


async def scheduled_retrain(context: TwinContext) -> None:
    if not start_retrain(context.application):
        log.info("scheduled retrain skipped: the previous one is still running")
