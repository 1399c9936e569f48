"""A correction's round trip: the owner edits a Business draft through the Bot API stand-in,
the bot keeps it (masked), training reads it back with the prompt the draft was written
from, and the preference stage moves the twin toward the owner's text on that prompt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bot.business_log import BusinessLog
from bot.chat_log import ChatLog, bot_db_path
from serving.twin import served_prompt
from tests.bot.botapi import BotApiStandIn
from tests.bot.helpers import ADMIN, bot_config, serving
from tests.bot.test_business import (
    a_draft,
    business_config,
    callback_answers,
    connected,
    draft_of,
    pressed,
)
from tests.trainer.helpers import fake_metrics
from tests.trainer.test_preference import reply_logprob
from trainer.eval.evaluate import TrainingSamples
from trainer.fit import add_lora
from trainer.metrics import PreferenceStage
from trainer.model import load_base
from trainer.preference import Figures, run_stage
from trainer.train import TrainResult
from twin.app.corrections import learned_from, read_corrections
from twin.app.status import status_of


@pytest.mark.anyio
async def test_an_edited_draft_moves_the_next_twin_toward_the_owners_text(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    config = config.with_section("preference", learning_rate=5e-3)
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api, "are you free on saturday? call +1 415 555 2671")
        draft = draft_of(api, notice)
        pressed(api, notice, "edit")
        await api.wait_for(lambda a: callback_answers(a) != [])
        api.push_message(ADMIN, "yes!! omw", first_name="Owner", reply_to_message=notice.result)
        await api.wait_for(lambda a: a.business_texts() != [])
        await api.settle(0.3)
    counts = status_of(config)["corrections"]
    assert (counts["edited"], counts["waiting"], counts["used"]) == (1, 1, 0)

    (fix,) = read_corrections(config)
    assert fix.verdict == "edited" and (fix.draft, fix.sent) == (draft, "yes!! omw")
    # The prompt the draft was written from, as served; the friend's number stayed masked.
    assert fix.prompt[0] == {"role": "system", "content": served_prompt(config)}
    assert "<PHONE>" in fix.prompt[-1]["content"] and "2671" not in str(fix.prompt)

    base = load_base(config)
    model = add_lora(base.model, config, base.plan, base.tokenizer)
    texts = (fix.sent or "", fix.draft)
    before = [reply_logprob(model, base.tokenizer, fix.prompt, text) for text in texts]
    nothing = TrainingSamples([], [], [])
    stage = run_stage(model, base.tokenizer, nothing, [fix], config, base.plan, 600.0, str)
    after = [reply_logprob(model, base.tokenizer, fix.prompt, text) for text in texts]
    assert after[0] > before[0] and after[1] < before[1]

    figures = Figures(1.0, 0.1, 0.5)
    record = PreferenceStage.of(stage, True, "kept", 60.0, 1.0, figures, figures)
    trained = replace(fake_metrics(1.0), preference=record)
    learned_from(config, TrainResult("v", tmp_path, False, "worse than current", trained))
    counts = status_of(config)["corrections"]
    assert (counts["waiting"], counts["used"]) == (1, 0)  # its adapter does not serve
    learned_from(config, TrainResult("v", tmp_path, True, "promoted", trained))
    counts = status_of(config)["corrections"]
    assert (counts["waiting"], counts["used"]) == (0, 1)
    with ChatLog(bot_db_path(config), config.bot.context_messages) as chat_log:
        assert [c.correction_id for c in BusinessLog(chat_log).corrections()] == [fix.correction_id]


def test_each_correction_keeps_its_own_chats_memory_block(tmp_path: Path, tiny_base: Path) -> None:
    config = bot_config(tmp_path, tiny_base, "http://127.0.0.1:9")
    with ChatLog(bot_db_path(config), config.bot.context_messages) as chat_log:
        kept = BusinessLog(chat_log)
        turns_a = [{"role": "user", "content": "what's the gate code?"}]
        turns_b = [{"role": "user", "content": "cake on friday?"}]
        kept.add_correction(100, "edited", turns_a, "Remembered: code 4417", "no idea", "4417")
        kept.add_correction(200, "skipped", turns_b, "Remembered: Bob's birthday", "no", None)
    system = served_prompt(config)
    a, b = read_corrections(config)
    assert a.prompt == [
        {"role": "system", "content": system},
        {**turns_a[0], "memory": "Remembered: code 4417"},
    ]
    assert "Bob" not in str(a.prompt) and "4417" not in str(b.prompt)
    off = config.with_section("preference", enabled=False)
    assert read_corrections(off) == []
