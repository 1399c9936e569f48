"""The bot's model worker over the openai engine, against the vLLM stand-in
(tests/serving/openai_standin.py): a prompt the server will never take costs that one reply,
never the rest of its batch or the chats behind it, and `twin serve` stops within seconds
whatever the server is doing."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.chat_log import ChatLog, Where
from bot.worker import ModelWorker
from tests.bot.botapi import TOKEN, BotApiStandIn
from tests.bot.helpers import bot_config
from tests.helpers import twin_command
from tests.serving.openai_standin import BASE_NAME, OpenAIStandIn
from twin.core.config import Config
from twin.core.conversation import Said

SECRET_WORDS = "meet me at the old bridge at nine"
LONG_CHAT = 3  # the chat whose conversation is over the server's --max-model-len


@pytest.fixture
def server() -> Iterator[OpenAIStandIn]:
    with OpenAIStandIn(max_model_len=400) as standin:
        yield standin


@pytest.fixture
async def worker(
    tmp_path: Path, tiny_base: Path, server: OpenAIStandIn
) -> AsyncIterator[tuple[ModelWorker, list[str]]]:
    config = bot_config(
        tmp_path, tiny_base, "http://127.0.0.1:9", serving={"engine": "openai", "url": server.url}
    )
    chat_log = ChatLog(config.data_dir / "bot.db", config.bot.context_messages)
    worker = ModelWorker(config, chat_log)
    told: list[str] = []

    async def tell(problem: str) -> None:
        told.append(problem)

    worker.on_problem = tell
    await worker.start()
    try:
        yield worker, told
    finally:
        await worker.stop()
        chat_log.close()


def say(worker: ModelWorker, chat: int, text: str) -> None:
    worker.chat_log.remember(Where(chat, 0), Said(str(chat), "Friend", text, time.time()))


async def answers(worker: ModelWorker, chats: list[int]) -> dict[int, str | None]:
    """Every chat's reply, asked at once: one batch (the worker takes what is queued)."""
    asked = [worker.answer(Where(chat, 0), group=False) for chat in chats]
    replies = await asyncio.wait_for(asyncio.gather(*asked), 120)
    return dict(zip(chats, replies, strict=True))


@pytest.mark.anyio
async def test_a_prompt_the_server_refuses_costs_only_its_own_reply(
    worker: tuple[ModelWorker, list[str]],
    server: OpenAIStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, told = worker
    chats = [1, 2, LONG_CHAT, 4, 5]
    for chat in chats:
        say(model, chat, f"hey, it's {chat}. coffee later?")
    say(model, LONG_CHAT, SECRET_WORDS + " and then" * 300)  # over the server's 400 tokens

    with caplog.at_level(logging.INFO):
        replies = await answers(model, chats)

    assert replies[LONG_CHAT] == ""  # dropped, alone
    for chat in chats:
        if chat != LONG_CHAT:
            assert (replies[chat] or "").startswith(f"{BASE_NAME} says "), chat
    first, *rest = server.calls_to("/completions")
    assert (len(first.body["prompt"]), first.status) == (5, 400)  # one batch, refused...
    assert sum(len(c.body["prompt"]) for c in rest if c.status == 200) == 4  # ...then split
    assert told == [
        f"A reply was not sent: {server.url}/completions refused a prompt: 400 "
        "(BadRequestError): check the server's --max-model-len against [bot] context_tokens. "
        "Other chats are answered; later refusals like this one are only logged."
    ]
    assert f"no reply for chat {LONG_CHAT}: {server.url}/completions refused" in caplog.text
    assert SECRET_WORDS not in caplog.text

    # Refused again later: logged again, the admins are not told twice; the others answered.
    say(model, LONG_CHAT, "and another thing")
    say(model, 1, "so?")
    replies = await answers(model, [1, LONG_CHAT])
    assert replies[LONG_CHAT] == "" and (replies[1] or "").startswith(f"{BASE_NAME} says ")
    assert len(told) == 1


def test_sigterm_stops_serve_within_seconds_while_the_server_hangs(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    server: OpenAIStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config: Config = bot_config(
        tmp_path, tiny_base, api.url, serving={"engine": "openai", "url": server.url}
    )
    server.stall("/completions", 300)  # takes the request, never answers it
    hanging = threading.Event()  # set when the completion request reached the server
    stall = server._stall

    def noted(path: str) -> None:
        if path == "/completions":
            hanging.set()
        stall(path)

    monkeypatch.setattr(server, "_stall", noted)
    env = {**os.environ, "TWIN_BOT_TOKEN": TOKEN}
    process = subprocess.Popen(
        twin_command(config, "serve"), env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        api.push_message(1, "tell me everything")
        deadline = time.monotonic() + 120
        while not hanging.is_set():  # the reply's completion request, held by the server
            assert process.poll() is None and time.monotonic() < deadline, api.summary()
            time.sleep(0.05)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        stopped_in = time.monotonic() - signalled
    finally:
        process.kill()
    errors = process.stderr.read() if process.stderr else ""
    assert process.returncode == 0, errors
    assert stopped_in < 15, f"took {stopped_in:.1f} s to stop"
    assert api.sent(chat_id=1) == []
    assert "Traceback" not in errors
