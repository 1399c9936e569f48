"""The nightly retrain inside `twin serve`: fires on its trigger, one run at a time, catches up
once after downtime, and reports to admins with a chart (a real PNG upload)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.app import build_application, running
from bot.retraining import retrain_running
from bot.schedule import missed_fire, schedule_retrain
from tests.bot.botapi import TOKEN, BotApiStandIn
from tests.bot.helpers import ADMIN, bot_config, retrain_config
from tests.bot.test_persona import ask
from twin.core.runs import read_records

UTC = dt.UTC


def test_missed_fire() -> None:
    nightly = CronTrigger.from_crontab("0 3 * * *", timezone=UTC)
    day = dt.datetime(2026, 11, 24, tzinfo=UTC)
    # last refresh at 02:00, now 05:00: the 03:00 run was missed
    assert missed_fire(nightly, day.replace(hour=2), day.replace(hour=5))
    # last refresh after 03:00: nothing missed until tomorrow's 03:00
    assert not missed_fire(nightly, day.replace(hour=3, minute=30), day.replace(hour=23))
    # three nights down: still one catch-up (the caller schedules one run)
    assert missed_fire(nightly, day - dt.timedelta(days=3), day.replace(hour=5))
    berlin = CronTrigger.from_crontab("0 3 * * *", timezone="Europe/Berlin")
    # 03:00 in Berlin is 02:00 UTC in winter
    assert missed_fire(berlin, day.replace(hour=1), day.replace(hour=2, minute=30))
    assert not missed_fire(berlin, day.replace(hour=1), day.replace(hour=1, minute=59))


@pytest.mark.anyio
async def test_missed_nights_run_once_at_start(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(
        tmp_path, tiny_base, api.url, schedule={"retrain_cron": "0 3 * * *", "timezone": "UTC"}
    )
    runs = config.data_dir / "runs"
    runs.mkdir(parents=True)
    for day in ("20261120", "20261121"):  # the last runs, days ago
        (runs / f"{day}-030000.json").write_text(json.dumps({"started": f"{day}-030000"}))
    app = build_application(config, TOKEN, poll_timeout=1)
    async with running(app, poll_timeout=1) as runtime:
        assert app.job_queue is not None
        names = sorted(job.name or "" for job in app.job_queue.jobs() if "retrain" in str(job.name))
        assert names == ["missed retrain", "retrain"]  # one catch-up, not two
        assert runtime.next_retrain is not None
        assert (runtime.next_retrain.hour, runtime.next_retrain.minute) == (3, 0)
        assert "Next retrain: " in await ask(api, "/persona status")


@pytest.mark.anyio
async def test_scheduled_retrain_fires_once_at_a_time_and_reports_with_a_chart(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = retrain_config(
        tmp_path, tiny_base, api.url, schedule={"pause_serving_while_training": True}
    )
    app = build_application(config, TOKEN, poll_timeout=1)
    async with running(app, poll_timeout=1) as runtime:
        # fires every second; runs take longer: later fires must not start a second run
        schedule_retrain(app, IntervalTrigger(seconds=1))
        await api.wait_for(lambda a: retrain_running(runtime), 30)
        await api.wait_for(lambda a: not runtime.worker._loaded.is_set(), 30)
        api.push_message(1, "message while the model is unloaded")
        await api.wait_for(lambda a: len(a.sent("sendPhoto", chat_id=ADMIN)) >= 1, 240)
        assert runtime.retrain_job is not None
        runtime.retrain_job.schedule_removal()
        # the message waited for the model and was answered after training
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1, 60)
        report = api.sent("sendPhoto", chat_id=ADMIN)[0]
        assert api.sent(chat_id=1)[0].at > report.at - 5
        assert report.files["photo"].startswith(b"\x89PNG\r\n\x1a\n")
        assert "promoted" in report.params["caption"]
        await api.settle(1.5)
    records = read_records(config.data_dir)
    assert records[0].outcome == "promoted"
    # later fires found a run going (skipped) or nothing new (a skipped run record): never two
    # runs at once, and never a second training of the same data
    assert all(r.outcome == "skipped" for r in records[1:])


def test_the_same_skip_is_told_to_admins_once() -> None:
    from bot.retraining import _told_already
    from twin.core.runs import RunRecord

    rejected = RunRecord("20261120-030000", outcome="not promoted", training_key="k")
    first_skip = RunRecord("20261121-030000", outcome="skipped", training_key="k")
    second_skip = RunRecord("20261122-030000", outcome="skipped", training_key="k")
    changed = RunRecord("20261123-030000", outcome="skipped", training_key="other")
    assert not _told_already([rejected], first_skip)  # the first night says why
    assert _told_already([rejected, first_skip], second_skip)  # the next ones stay quiet
    assert not _told_already([rejected, first_skip, second_skip], changed)
