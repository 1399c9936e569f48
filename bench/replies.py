"""Benchmark: the bot's reply latency and throughput with the embedded SmolLM2, over real HTTP.

Runs `twin serve`'s Application against the Bot API stand-in of the tests, greedy decoding so
that the bot and a bare `generate` call produce the same tokens, and reports:
- latency: update queued at the stand-in -> last reply message received, vs the bare
  `generate_replies` time for the same prompt (same tokens);
- memory: the same latency with `[memory]` on (the demo persona's history indexed, replies in
  her chats, so each reply really searches and carries a memory block), decoded plainly
  (`[generation] memory_guidance` 0), vs off;
- guidance: that memory-on latency with memory-guided decoding (`memory_guidance` at its
  default: each reply decoded beside a contrast row, its prompt without the block) vs plainly;
- throughput: replies/s with 16 chats writing at once vs 16 chats one after another, memory
  off; and again with memory on and guidance at its default, so that the batch holds a
  contrast row beside every reply (scope "all": a chat with no history of its own recalls
  from the others', so every one of the 16 carries a block).
The three latency setups alternate, twice each, in one run. Every reply that should carry a
memory block is checked to have carried one (the worker's last recall of its chat): a run
where one did not stops with an error instead of a figure.

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
from twin.core.config import Config, GenerationConfig
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
GUIDANCE = GenerationConfig().memory_guidance  # the default strength, as served
# What the latency rounds alternate between: ([memory] enabled, [generation] memory_guidance).
SETUPS = {"off": (False, 0.0), "plain": (True, 0.0), "guided": (True, GUIDANCE)}


def message(i: int) -> str:
    return f"{MESSAGES[i % len(MESSAGES)]} ({i})"


def said(runtime: BotRuntime, chat: int) -> int:
    return len(runtime.chat_log.recent(Where(chat)))


def carried_block(runtime: BotRuntime, chat: int) -> bool:
    """Whether the last reply in `chat` had a memory block in its system turn."""
    recall = runtime.worker.last_recall.get(Where(chat))
    return recall is not None and recall.block != ""


def configured(
    folder: Path,
    api_url: str,
    new_tokens: int,
    chats: int,
    memory: bool,
    guidance: float = GUIDANCE,
    scope: str = "chat",
) -> Config:
    # chat ids: 1000 warm-up, the demo's friends for latency, 3000+ one at a time, 4000+ at once
    allowed = [1000, *DEMO_FRIENDS, *range(3000, 3000 + chats), *range(4000, 4000 + chats)]
    return bot_config(
        folder,
        Path("unused"),
        api_url,
        model={"base": "smollm2-135m", "cpu_dtype": "fp32"},
        generation={"max_new_tokens": new_tokens, "temperature": 0.0, "memory_guidance": guidance},
        telegram={"allowed_users": allowed},
        bot={"reload_seconds": 10.0, "line_pause_per_char": 0.0},  # as served
        memory={"enabled": memory, "scope": scope},
    )


async def latencies(
    api: BotApiStandIn, runtime: BotRuntime, offset: int
) -> tuple[list[float], int]:
    """Update in -> reply out, one message at a time, in the demo friends' chats, and how many
    of those replies carried a memory block. Each is the first message of its conversation,
    so the bot's prompt is the bare generate's one (plus the memory block when memory is on),
    not a growing chat."""
    out, blocks = [], 0
    for i in range(LATENCY_ROUNDS):
        chat = DEMO_FRIENDS[i % len(DEMO_FRIENDS)]
        runtime.chat_log.forget(Where(chat))
        runtime.worker.last_recall.pop(Where(chat), None)  # the chat is idle: nothing writes it
        update = api.push_message(chat, message(offset + i))
        await api.wait_for(lambda a, c=chat: said(runtime, c) >= 2, 300)
        out.append(api.sent(chat_id=chat)[-1].at - api.pushed_at[update])
        blocks += carried_block(runtime, chat)
    return out, blocks


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
        timings: dict[str, list[float]] = {name: [] for name in SETUPS}
        blocks: dict[str, int] = dict.fromkeys(SETUPS, 0)
        # Each setup twice, alternating: drift on a shared machine hits all three. The two
        # passes send different messages, each setup the same ones.
        for round_ in range(2 * len(SETUPS)):
            name = list(SETUPS)[round_ % len(SETUPS)]
            memory, guidance = SETUPS[name]
            setup = configured(folder, api.url, new_tokens, chats, memory, guidance)
            for leftover in setup.data_dir.glob("bot.db*"):  # every round starts unremembered
                leftover.unlink()
            async with serving(setup) as runtime:
                api.push_message(1000, "hi")  # warm-up
                await api.wait_for(lambda a, r=runtime: said(r, 1000) >= 2, 300)
                passed = round_ // len(SETUPS)
                times, carried = await latencies(api, runtime, passed * LATENCY_ROUNDS)
                timings[name] += times
                blocks[name] += carried
                if round_ == 0:
                    result.update(await throughput(api, runtime, chats))
        for name, (memory, _) in SETUPS.items():
            if memory and blocks[name] < len(timings[name]):
                raise RuntimeError(
                    f"only {blocks[name]} of {len(timings[name])} '{name}' replies carried a "
                    "memory block: the memory figures would not measure memory"
                )
        # Guided throughput: memory on, every chat recalling (scope "all"), guidance as served.
        setup = configured(folder, api.url, new_tokens, chats, True, GUIDANCE, scope="all")
        for leftover in setup.data_dir.glob("bot.db*"):
            leftover.unlink()
        async with serving(setup) as runtime:
            api.push_message(1000, "hi")  # warm-up
            await api.wait_for(lambda a, r=runtime: said(r, 1000) >= 2, 300)
            guided = await throughput(api, runtime, chats)
        for way in ("one_at_a_time", "concurrent"):
            if guided[f"{way}_replies_with_block"] < chats:
                raise RuntimeError(
                    f"only {guided[f'{way}_replies_with_block']} of {chats} {way} replies in "
                    "the guided throughput carried a memory block: not every reply was guided"
                )
        result.update({f"{key}_guided": value for key, value in guided.items()})
    twin = load_served_twin(config)
    bare = []
    for i in range(LATENCY_ROUNDS):
        conversation = with_system_prompt(
            twin.system_prompt, [{"role": "user", "content": message(i)}]
        )
        started = time.perf_counter()
        generate_replies(twin.engine.model, twin.tokenizer, [conversation], config.generation)
        bare.append(time.perf_counter() - started)
    latency = statistics.median(timings["off"])
    with_memory = statistics.median(timings["plain"])
    guided_latency = statistics.median(timings["guided"])
    result.update(
        latency_s=latency,
        latency_with_memory_s=with_memory,
        memory_reply_overhead=with_memory / latency,
        latency_with_memory_guided_s=guided_latency,
        guided_reply_overhead=guided_latency / with_memory,
        memory_guidance=GUIDANCE,
        replies_with_block={name: f"{blocks[name]}/{len(timings[name])}" for name in SETUPS},
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
        "one_at_a_time_replies_with_block": sum(
            carried_block(runtime, 3000 + i) for i in range(chats)
        ),
        "concurrent_replies_with_block": sum(
            carried_block(runtime, 4000 + i) for i in range(chats)
        ),
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
