"""Benchmark: the bot's reply latency and throughput with the embedded SmolLM2, over real HTTP.

Runs `twin serve`'s Application against the Bot API stand-in of the tests, greedy decoding so
that the bot and a bare `generate` call produce the same tokens, and reports:
- latency: update queued at the stand-in -> last reply message received, vs the bare
  `generate_replies` time for the same prompt (same tokens);
- memory: the same latency with `[memory]` on (the demo persona's history indexed, replies in
  her chats, so each reply really searches and carries a memory block) vs off, in one run;
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
from typing import Any

from bench import emit
from bot.chat_log import Where
from bot.context import BotRuntime
from ingest.export import import_export
from ingest.recall import update_memory
from ingest.store import open_store
from serving.twin import load_served_twin
from tests.bot.botapi import BotApiStandIn
from tests.bot.helpers import bot_config, serving
from trainer.generation import generate_replies
from twin.app.demo import demo_export_path
from twin.core.config import Config
from twin.core.conversation import with_system_prompt

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
# Mira's friends in the demo export: their private chats have history to recall from.
DEMO_FRIENDS = (5550102, 5550103, 5550104, 5550105)
LATENCY_ROUNDS = 6


def message(i: int) -> str:
    return f"{MESSAGES[i % len(MESSAGES)]} ({i})"


def said(runtime: BotRuntime, chat: int) -> int:
    return len(runtime.chat_log.recent(Where(chat)))


def configured(folder: Path, api_url: str, new_tokens: int, chats: int, memory: bool) -> Config:
    # chat ids: 1000 warm-up, the demo's friends for latency, 3000+ one at a time, 4000+ at once
    allowed = [1000, *DEMO_FRIENDS, *range(3000, 3000 + chats), *range(4000, 4000 + chats)]
    return bot_config(
        folder,
        Path("unused"),
        api_url,
        model={"base": "smollm2-135m", "cpu_dtype": "fp32"},
        generation={"max_new_tokens": new_tokens, "temperature": 0.0},
        telegram={"allowed_users": allowed},
        bot={"reload_seconds": 10.0, "line_pause_per_char": 0.0},  # as served
        memory={"enabled": memory},
    )


async def latencies(api: BotApiStandIn, runtime: BotRuntime, offset: int) -> list[float]:
    """Update in -> reply out, one message at a time, in the demo friends' chats. Each is the
    first message of its conversation, so the bot's prompt is the bare generate's one (plus
    the memory block when memory is on), not a growing chat."""
    out = []
    for i in range(LATENCY_ROUNDS):
        chat = DEMO_FRIENDS[i % len(DEMO_FRIENDS)]
        runtime.chat_log.forget(Where(chat))
        update = api.push_message(chat, message(offset + i))
        await api.wait_for(lambda a, c=chat: said(runtime, c) >= 2, 300)
        out.append(api.sent(chat_id=chat)[-1].at - api.pushed_at[update])
    return out


async def measure(folder: Path, chats: int, new_tokens: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with BotApiStandIn() as api:
        config = configured(folder, api.url, new_tokens, chats, memory=False)
        with open_store(config.store_path) as store:
            import_export(demo_export_path(), store, progress=False)
            indexed = update_memory(
                configured(folder, api.url, new_tokens, chats, True), store, progress=False
            )
        assert indexed is not None
        result["memory_entries"] = indexed.added
        timings: dict[bool, list[float]] = {False: [], True: []}
        # Memory off and on, twice each, alternating: drift on a shared machine hits both.
        for round_ in range(4):
            memory = bool(round_ % 2)
            setup = configured(folder, api.url, new_tokens, chats, memory)
            for leftover in setup.data_dir.glob("bot.db*"):  # every round starts unremembered
                leftover.unlink()
            async with serving(setup) as runtime:
                api.push_message(1000, "hi")  # warm-up
                await api.wait_for(lambda a, r=runtime: said(r, 1000) >= 2, 300)
                timings[memory] += await latencies(api, runtime, round_ * LATENCY_ROUNDS)
                if round_ == 0:
                    result.update(await throughput(api, runtime, chats))
    twin = load_served_twin(config)
    bare = []
    for i in range(LATENCY_ROUNDS):
        conversation = with_system_prompt(
            twin.system_prompt, [{"role": "user", "content": message(i)}]
        )
        started = time.perf_counter()
        generate_replies(twin.engine.model, twin.tokenizer, [conversation], config.generation)
        bare.append(time.perf_counter() - started)
    latency, with_memory = statistics.median(timings[False]), statistics.median(timings[True])
    result.update(
        latency_s=latency,
        latency_with_memory_s=with_memory,
        memory_reply_overhead=with_memory / latency,
        bare_generate_s=statistics.median(bare),
        reply_overhead=latency / statistics.median(bare),
        chats=chats,
        new_tokens=new_tokens,
    )
    return result


async def throughput(api: BotApiStandIn, runtime: BotRuntime, chats: int) -> dict[str, Any]:
    started = time.monotonic()
    for i in range(chats):
        chat = 3000 + i
        api.push_message(chat, message(i))
        await api.wait_for(lambda a, c=chat: said(runtime, c) == 2, 300)
    one_at_a_time = time.monotonic() - started
    calls_before = runtime.worker.stats.generate_calls
    started = time.monotonic()
    for i in range(chats):
        api.push_message(4000 + i, message(i))
    await api.wait_for(lambda a: all(said(runtime, 4000 + i) == 2 for i in range(chats)), 600)
    concurrent = time.monotonic() - started
    return {
        "concurrent_generate_calls": runtime.worker.stats.generate_calls - calls_before,
        "one_at_a_time_replies_per_s": chats / one_at_a_time,
        "concurrent_replies_per_s": chats / concurrent,
        "batched_speedup": one_at_a_time / concurrent,
    }


def measure_replies(chats: int, new_tokens: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        return asyncio.run(measure(Path(folder), chats, new_tokens))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chats", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    emit(measure_replies(args.chats, args.new_tokens), args.out)


if __name__ == "__main__":
    main()
