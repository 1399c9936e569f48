"""The bot serving the real embedded SmolLM2: the reply is exactly what `generate` gives for the
training-format prompt, and the bot adds little time on top of the model."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from serving.twin import load_served_twin
from tests.bot.botapi import BotApiStandIn
from tests.bot.helpers import bot_config, said, serving
from trainer.generation import generate_replies
from twin.core.conversation import with_system_prompt


@pytest.mark.slow
@pytest.mark.anyio
async def test_bot_serves_smollm2_in_the_training_format(
    tmp_path: Path, smollm2: Path, api: BotApiStandIn
) -> None:
    config = bot_config(
        tmp_path,
        Path("unused"),
        api.url,
        model={"base": "smollm2-135m", "cpu_dtype": "fp32"},
        # Greedy, so the bot's reply and a bare generate call must agree token for token.
        generation={"max_new_tokens": 24, "temperature": 0.0},
    )
    message = "hey! are we still on for dinner tomorrow?"

    async with serving(config) as runtime:
        api.push_message(1, message)
        await api.wait_for(lambda a: len(said(runtime, 1)) == 2, 120)
        update_id = max(api.pushed_at)
        latency = api.sent(chat_id=1)[-1].at - api.pushed_at[update_id]
    twin = load_served_twin(config)
    conversation = with_system_prompt(twin.system_prompt, [{"role": "user", "content": message}])
    started = time.perf_counter()
    (expected,) = generate_replies(
        twin.engine.model, twin.tokenizer, [conversation], config.generation
    )
    bare = time.perf_counter() - started
    assert (
        twin.system_prompt
        == "You are the owner. Reply to this Telegram chat exactly as the owner would."
    )
    sent = [line.strip() for line in expected.splitlines() if line.strip()]
    assert api.texts(1) == sent and sent
    # Loose here (shared CI machines); `make bench` measures the ratio properly.
    assert latency < bare * 2 + 1.0, (latency, bare)
