"""Benchmark: the bot's reply latency and throughput with the embedded SmolLM2, over real HTTP.

Runs `twin serve`'s Application against the Bot API stand-in of the tests, greedy decoding so
that the bot and a bare `generate` call produce the same tokens, and reports:
- latency: update queued at the stand-in -> last reply message received, vs the bare
  `generate_replies` time for the same prompt (same tokens);
- throughput: replies/s with 16 chats writing at once vs 16 chats one after another.

    .venv/bin/python -m bench.replies [--chats 16] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench import emit
from bot.serving import load_served_twin
from tests.bot.botapi import BotApiStandIn
from tests.bot.conftest import bot_config, serving
from twin.core.conversation import with_system_prompt
from twin.core.generation import generate_replies

MESSAGES = [
    "hey! are we still on for dinner tomorrow?",
    "did you see the game last night",
    "can you send me the address again?",
    "how was the trip??",
    "I finally finished the book you lent me",
    "running late, 10 min",
    "what do you think about the new job offer",
    "happy birthday!!! 🎉",
]


def message(i: int) -> str:
    return f"{MESSAGES[i % len(MESSAGES)]} ({i})"


async def measure(config, chats: int) -> dict:  # type: ignore[no-untyped-def]
    # chat ids: 1000 warm-up, 2000+ latency, 3000+ one at a time, 4000+ all at once
    allowed = [1000, *range(2000, 2005), *range(3000, 3000 + chats), *range(4000, 4000 + chats)]
    result: dict = {}
    with BotApiStandIn() as api:
        config = bot_config(
            config["folder"],
            Path("unused"),
            api.url,
            model={"base": "smollm2-135m", "cpu_dtype": "fp32"},
            generation={"max_new_tokens": config["new_tokens"], "temperature": 0.0},
            telegram={"allowed_users": allowed},
            bot={"reload_seconds": 10.0, "line_pause_per_char": 0.0},  # as served
        )
        async with serving(config) as runtime:
            # warm-up
            api.push_message(1000, "hi")
            await api.wait_for(lambda a: len(runtime.memory.recent(1000)) == 2, 300)

            latencies = []
            for i in range(5):
                chat = 2000 + i
                update = api.push_message(chat, message(i))
                await api.wait_for(lambda a, c=chat: len(runtime.memory.recent(c)) == 2, 300)
                latencies.append(api.sent(chat_id=chat)[-1].at - api.pushed_at[update])

            started = time.monotonic()
            for i in range(chats):
                chat = 3000 + i
                api.push_message(chat, message(i))
                await api.wait_for(lambda a, c=chat: len(runtime.memory.recent(c)) == 2, 300)
            one_at_a_time = time.monotonic() - started

            calls_before = runtime.worker.stats.generate_calls
            started = time.monotonic()
            for i in range(chats):
                api.push_message(4000 + i, message(i))
            await api.wait_for(
                lambda a: all(len(runtime.memory.recent(4000 + i)) == 2 for i in range(chats)),
                600,
            )
            concurrent = time.monotonic() - started
            result["concurrent_generate_calls"] = runtime.worker.stats.generate_calls - calls_before

    twin = load_served_twin(config)
    bare = []
    for i in range(5):
        conversation = with_system_prompt(
            twin.system_prompt, [{"role": "user", "content": message(i)}]
        )
        started = time.perf_counter()
        generate_replies(twin.engine.model, twin.tokenizer, [conversation], config.generation)
        bare.append(time.perf_counter() - started)
    result.update(
        latency_s=statistics.median(latencies),
        bare_generate_s=statistics.median(bare),
        reply_overhead=statistics.median(latencies) / statistics.median(bare),
        one_at_a_time_replies_per_s=chats / one_at_a_time,
        concurrent_replies_per_s=chats / concurrent,
        batched_speedup=one_at_a_time / concurrent,
        chats=chats,
        new_tokens=config.generation.max_new_tokens,
    )
    return result


def measure_replies(chats: int, new_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(measure({"folder": Path(folder), "new_tokens": new_tokens}, chats))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chats", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    emit(measure_replies(args.chats, args.new_tokens), args.out)


if __name__ == "__main__":
    main()
