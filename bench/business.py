"""Benchmark: a friend's message in the owner's own chat (Telegram Business) -> the owner's
draft, with the embedded SmolLM2 and the demo persona's history (memory on, memory-guided
decoding as served), against the same message in the friend's chat with the bot -> reply.

Runs `twin serve`'s Application against the Bot API stand-in of the tests; greedy decoding,
so both paths write the same tokens and the ratio is what the Business path adds (the
connection check, the chat log, the live history write, the draft notice). The two paths
alternate, message by message, in the demo friends' chats (each the first message of its
conversation). `--transcript PATH` also writes one whole draft flow, updates in and calls out,
as JSON lines.

    .venv/bin/python -m bench.business [--rounds 8] [--new-tokens 64] [--transcript PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import emit
from bench.replies import DEMO_FRIENDS, message
from bot.chat_log import Where
from bot.context import BotRuntime
from ingest.export import import_export
from ingest.recall import update_memory
from ingest.store import open_store
from tests.bot.botapi import BotApiStandIn, Call
from tests.bot.helpers import bot_config, serving
from twin.app.demo import demo_export_path
from twin.core.config import Config

CONNECTION = "bench-connection"


def configured(folder: Path, api_url: str, new_tokens: int, owner: int) -> Config:
    return bot_config(
        folder,
        Path("unused"),
        api_url,
        model={"base": "smollm2-135m"},
        generation={"max_new_tokens": new_tokens, "temperature": 0.0},
        telegram={"allowed_users": [1000, *DEMO_FRIENDS], "admins": [owner]},
        bot={"reload_seconds": 10.0, "line_pause_per_char": 0.0},
    )


def notices(api: BotApiStandIn, owner: int) -> list[Call]:
    return [c for c in api.sent("sendMessage", chat_id=owner) if "reply_markup" in c.params]


def carried_block(runtime: BotRuntime, where: Where) -> bool:
    recall = runtime.worker.last_recall.get(where)
    return recall is not None and recall.block != ""


async def measure(
    folder: Path, rounds: int, new_tokens: int, transcript: Path | None
) -> dict[str, Any]:
    with BotApiStandIn() as api:
        store_path = configured(folder, api.url, new_tokens, 1).store_path
        with open_store(store_path) as store:
            import_export(demo_export_path(), store, progress=False)
            owner = store.owner()
            assert owner is not None and owner.user_id is not None
            config = configured(folder, api.url, new_tokens, owner.user_id)
            update_memory(config, store, progress=False)
        me = owner.user_id
        reply_s: list[float] = []
        draft_s: list[float] = []
        blocks = 0
        async with serving(config) as runtime:
            api.push_business_connection(CONNECTION, me, first_name="Mira")
            await api.wait_for(lambda a: runtime.business.connection(CONNECTION) is not None)
            api.push_message(1000, "hi")  # warm-up
            await api.wait_for(lambda a: len(runtime.chat_log.recent(Where(1000))) >= 2, 300)
            for i in range(rounds):
                chat = DEMO_FRIENDS[i % len(DEMO_FRIENDS)]
                text = message(i)
                # The friend's chat with the bot: update in -> the reply's last message out.
                runtime.chat_log.forget(Where(chat))
                update = api.push_message(chat, text)
                await api.wait_for(
                    lambda a, c=chat: len(runtime.chat_log.recent(Where(c))) >= 2, 300
                )
                answered = [c for c in api.sent(chat_id=chat) if c.business is None]
                reply_s.append(answered[-1].at - api.pushed_at[update])
                blocks += carried_block(runtime, Where(chat))
                # The owner's chat with the friend: update in -> the draft in the owner's chat.
                business = Where(chat, 0, me)
                runtime.chat_log.forget(business)
                before = len(notices(api, me))
                api.push_business_message(CONNECTION, chat, chat, text)
                update = max(api.pushed_at)
                await api.wait_for(lambda a, n=before: len(notices(a, me)) > n, 300)
                draft_s.append(notices(api, me)[-1].at - api.pushed_at[update])
                blocks += carried_block(runtime, business)
            if blocks < 2 * rounds:
                raise RuntimeError(f"only {blocks} of {2 * rounds} replies carried a memory block")
            if transcript is not None:
                await record_flow(api, runtime, me, transcript)
    reply = statistics.median(reply_s)
    draft = statistics.median(draft_s)
    return {
        "draft_s": draft,
        "reply_s": reply,
        "draft_overhead": draft / reply,
        "drafts_s": draft_s,
        "replies_s": reply_s,
        "rounds": rounds,
        "new_tokens": new_tokens,
        "replies_with_block": f"{blocks}/{2 * rounds}",
    }


async def record_flow(api: BotApiStandIn, runtime: BotRuntime, me: int, path: Path) -> None:
    """One draft, start to end: the friend writes, the owner gets the draft and sends it."""
    chat = DEMO_FRIENDS[0]
    runtime.chat_log.forget(Where(chat, 0, me))
    first_call = len(api.calls)
    before = len(notices(api, me))
    lines: list[dict[str, Any]] = []
    message_id = api.push_business_message(CONNECTION, chat, chat, "are you free on saturday?")
    lines.append({"in": "business_message", "chat": chat, "from": chat, "id": message_id})
    await api.wait_for(lambda a: len(notices(a, me)) > before, 300)
    await api.settle(0.5)
    notice = notices(api, me)[-1]
    (draft,) = runtime.business.pending(Where(chat, 0, me))  # the older ones were replaced
    lines += calls(api, first_call)
    first_call = len(api.calls)
    api.push_callback(me, me, notice.result["message_id"], f"draft:send:{draft.draft_id}")
    lines.append({"in": "callback_query", "from": me, "data": f"draft:send:{draft.draft_id}"})
    await api.wait_for(lambda a: a.sent("answerCallbackQuery") != [], 60)
    await api.settle(0.5)
    lines += calls(api, first_call)
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def calls(api: BotApiStandIn, since: int) -> list[dict[str, Any]]:
    keep = ("chat_id", "business_connection_id", "text", "message_id", "show_alert")
    return [
        {"out": c.method, "status": c.status, **{k: c.params[k] for k in keep if k in c.params}}
        for c in api.calls[since:]
        if c.method != "getUpdates"
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--transcript", type=Path, help="write one draft flow there (JSON lines)")
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(measure(Path(folder), args.rounds, args.new_tokens, args.transcript))
    emit(result, args.out)


if __name__ == "__main__":
    main()
