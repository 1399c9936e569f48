"""`twin serve` end to end: the real Application against the Bot API stand-in, over HTTP."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from tenacity import wait_fixed

from bot import delivery
from bot.app import build_application
from tests.bot.botapi import TOKEN, BotApiStandIn
from tests.bot.conftest import ADMIN, FRIENDS, GROUP, STRANGER, bot_config, serving
from tests.conftest import run_twin
from twin.config import BotConfig


def test_allowed_user_is_answered_with_typing_and_memory(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)

    async def scenario() -> None:
        async with serving(config) as runtime:
            api.push_message(1, "hey, coffee later?")
            await api.wait_for(lambda a: len(runtime.memory.recent(1)) == 2)
            assert api.sent("sendChatAction", chat_id=1), "no typing… while the model worked"
            assert api.sent("sendChatAction")[0].params["action"] == "typing"
            memory = runtime.memory.recent(1)
            assert memory[0] == {"role": "user", "content": "hey, coffee later?"}
            assert memory[1]["role"] == "assistant"
            # Each line of the reply went out as its own message.
            assert [line.strip() for line in memory[1]["content"].splitlines() if line.strip()] == (
                api.texts(1)
            )

    asyncio.run(scenario())


def test_stranger_gets_one_notice_and_never_model_output(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)

    async def scenario() -> None:
        async with serving(config) as runtime:
            api.push_message(STRANGER, "who are you?")
            api.push_message(STRANGER, "hello??")
            api.push_message(STRANGER, "/persona status")
            await api.wait_for(lambda a: len(a.sent(chat_id=STRANGER)) >= 1)
            await api.settle()
            assert api.texts(STRANGER) == [config.telegram.stranger_reply]
            assert runtime.worker.stats.replies == 0
            assert runtime.memory.recent(STRANGER) == []

    asyncio.run(scenario())


def test_silent_stranger_reply_and_non_admin_persona(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url, telegram={"stranger_reply": ""})

    async def scenario() -> None:
        async with serving(config) as runtime:
            api.push_message(STRANGER, "hi")
            api.push_message(1, "/persona status")  # a friend, not an admin
            api.push_message(1, "/persona pause")
            await api.settle(1.0)
            assert api.sent() == []
            assert not runtime.memory.paused

    asyncio.run(scenario())


def test_groups_answer_only_when_addressed_in_allowed_chats(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)

    async def scenario() -> None:
        async with serving(config) as runtime:
            group = {"chat_id": GROUP, "chat_type": "supergroup"}
            api.push_message(1, "just chatting among us", **group)
            api.push_message(2, "nobody asked the bot", **group, first_name="Bob")
            mention = "@twin_test_bot what do you think?"
            api.push_message(
                3,
                mention,
                chat_id=-555,
                chat_type="group",
                entities=[{"type": "mention", "offset": 0, "length": 14}],
            )
            await api.settle(1.0)
            assert api.sent() == []  # not addressed, or not an allowed group
            api.push_message(
                1, mention, **group, entities=[{"type": "mention", "offset": 0, "length": 14}]
            )
            await api.wait_for(lambda a: len(a.sent(chat_id=GROUP)) == 1)
            first = api.sent(chat_id=GROUP)[0]
            assert '"message_id"' in first.params["reply_parameters"]
            bot_message = {
                "message_id": 1,
                "date": 0,
                "chat": {"id": GROUP, "type": "supergroup"},
                "from": {"id": 999_000, "is_bot": True, "first_name": "Twin"},
            }
            api.push_message(2, "and you?", **group, first_name="Bob", reply_to_message=bot_message)
            await api.wait_for(lambda a: len(a.sent(chat_id=GROUP)) >= 2)
            # Several people talked: user turns carry their names, as in group training data.
            turns = runtime.memory.recent(GROUP)
            user_turns = [t["content"] for t in turns if t["role"] == "user"]
            assert user_turns[0].startswith("Ann: just chatting")
            assert user_turns[-1] == "Bob: and you?"
            assert all("@twin_test_bot" not in t for t in user_turns)

    asyncio.run(scenario())


def test_odd_updates_never_crash_it(tmp_path: Path, tiny_base: Path, api: BotApiStandIn) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    photo = [{"file_id": "p1", "file_unique_id": "u1", "width": 90, "height": 90}]
    sticker = {
        "file_id": "s1",
        "file_unique_id": "s1",
        "width": 512,
        "height": 512,
        "is_animated": False,
        "is_video": False,
        "type": "regular",
        "emoji": "😀",
    }

    async def scenario() -> None:
        async with serving(config) as runtime:
            api.push_message(1, None, photo=photo, caption="look at this view")
            api.push_message(2, None, sticker=sticker)
            api.push_message(3, None, voice={"file_id": "v", "file_unique_id": "v", "duration": 3})
            api.push_message(
                4, None, new_chat_members=[{"id": 5, "is_bot": False, "first_name": "X"}]
            )
            api.push_message(5, "/frobnicate now")
            api.push_message(6, "x" * 4096)
            api.push(
                {
                    "edited_message": {
                        "message_id": 9,
                        "date": 0,
                        "edit_date": 1,
                        "chat": {"id": 7, "type": "private"},
                        "from": {"id": 7, "is_bot": False, "first_name": "E"},
                        "text": "edited",
                    }
                }
            )
            api.push(
                {
                    "channel_post": {
                        "message_id": 3,
                        "date": 0,
                        "text": "news",
                        "chat": {"id": -1009, "type": "channel", "title": "C"},
                    }
                }
            )
            api.push(
                {
                    "callback_query": {
                        "id": "cb",
                        "chat_instance": "ci",
                        "data": "x",
                        "from": {"id": 8, "is_bot": False, "first_name": "Q"},
                    }
                }
            )
            await api.wait_for(lambda a: {c.chat_id for c in a.sent()} >= {1, 2, 3, 6})
            await api.settle()
            assert {c.chat_id for c in api.sent()} == {1, 2, 3, 6}
            assert runtime.memory.recent(1)[0]["content"] == "look at this view"
            assert runtime.memory.recent(2)[0]["content"] == "[sticker]"
            assert runtime.memory.recent(3)[0]["content"] == "[voice message]"
            assert runtime.memory.recent(5) == []  # unknown commands are not conversation
            # The bot is still fine after all that.
            api.push_message(7, "still there?")
            await api.wait_for(lambda a: len(a.sent(chat_id=7)) >= 1)

    asyncio.run(scenario())


def test_media_ignored_when_configured(tmp_path: Path, tiny_base: Path, api: BotApiStandIn) -> None:
    config = bot_config(tmp_path, tiny_base, api.url, bot={"media": "ignore"})

    async def scenario() -> None:
        async with serving(config):
            api.push_message(2, None, voice={"file_id": "v", "file_unique_id": "v", "duration": 3})
            api.push_message(3, "text still works")
            await api.wait_for(lambda a: len(a.sent(chat_id=3)) >= 1)
            await api.settle()
            assert api.sent(chat_id=2) == []

    asyncio.run(scenario())


def test_reply_delivered_after_429_and_500(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)

    async def scenario() -> None:
        async with serving(config) as runtime:
            api.fail("sendMessage", 429, retry_after=1)
            api.fail("sendMessage", 500)
            api.push_message(1, "are you there?")
            await api.wait_for(lambda a: len(runtime.memory.recent(1)) == 2)
            attempts = [c for c in api.calls if c.method == "sendMessage"]
            assert [c.status for c in attempts[:3]] == [429, 500, 200]
            assert attempts[1].at - attempts[0].at >= 0.9  # retry_after honoured
            assert attempts[0].params["text"] == attempts[2].params["text"]
            assert runtime.memory.recent(1)[-1]["role"] == "assistant"

    asyncio.run(scenario())


def test_failed_reply_is_logged_with_chat_id_not_text(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    monkey_attempts = delivery.SEND_ATTEMPTS
    monkeypatch.setattr(delivery, "RETRY_WAIT", wait_fixed(0.05))

    async def scenario() -> None:
        async with serving(config) as runtime:
            for _ in range(monkey_attempts):
                api.fail("sendMessage", 502)
            api.push_message(1, "my secret plans")
            await api.wait_for(
                lambda a: sum(c.method == "sendMessage" for c in a.calls) >= monkey_attempts, 60
            )
            await api.settle()
            # Not delivered, so not remembered as said: the chat's memory matches what they saw.
            assert [t["role"] for t in runtime.memory.recent(1)] == ["user"]

    with caplog.at_level("INFO"):
        asyncio.run(scenario())
    failures = [r for r in caplog.records if "could not send" in r.getMessage()]
    assert failures and "chat 1" in failures[0].getMessage()
    assert "secret" not in caplog.text


def test_twenty_concurrent_chats_are_batched(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)

    async def scenario() -> None:
        async with serving(config) as runtime:
            for user in FRIENDS:
                api.push_message(user, f"hi, it's {user}. how was your day?")
            await api.wait_for(lambda a: {c.chat_id for c in a.sent()} == set(FRIENDS), 60)
            stats = runtime.worker.stats
            assert stats.replies == 20
            assert stats.generate_calls < 20
            assert stats.largest_batch > 1

    asyncio.run(scenario())


def test_a_burst_from_one_chat_gets_one_reply(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)

    async def scenario() -> None:
        async with serving(config) as runtime:
            for user in FRIENDS[1:10]:  # keep the model busy so the burst queues up
                api.push_message(user, "hello there")
            for text in ("wait", "one more thing", "are you free tonight?"):
                api.push_message(1, text)
            await api.wait_for(lambda a: {c.chat_id for c in a.sent()} >= set(FRIENDS[:10]))
            await api.settle()
            turns = runtime.memory.recent(1)
            assert turns[0] == {
                "role": "user",
                "content": "wait\none more thing\nare you free tonight?",
            }
            assert [t["role"] for t in turns] == ["user", "assistant"]

    asyncio.run(scenario())


def test_reset_and_memory_survives_a_restart(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)

    async def first_run() -> None:
        async with serving(config):
            api.push_message(1, "remember: the meeting is on friday")
            api.push_message(2, "something for chat two")
            await api.wait_for(lambda a: {1, 2} <= {c.chat_id for c in a.sent()})
            await api.settle()

    async def second_run() -> None:
        async with serving(config) as runtime:
            assert runtime.memory.recent(1)[0]["content"] == "remember: the meeting is on friday"
            api.push_message(2, "/reset")
            await api.wait_for(lambda a: "Memory of this chat cleared." in a.texts(2))
            assert runtime.memory.recent(2) == []
            assert len(runtime.memory.recent(1)) == 2

    asyncio.run(first_run())
    asyncio.run(second_run())


def test_serve_needs_the_token(tmp_path: Path, tiny_base: Path) -> None:
    config = bot_config(tmp_path, tiny_base, "http://127.0.0.1:9")
    env = {k: v for k, v in os.environ.items() if k != "TWIN_BOT_TOKEN"}
    result = run_twin(config, "serve", env=env)
    assert result.returncode == 1
    assert "TWIN_BOT_TOKEN is not set" in result.stderr


def test_bot_api_url_and_token_reach_the_stand_in(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url + "/")
    app = build_application(config, TOKEN)
    assert app.bot.base_url == f"{api.url}/bot{TOKEN}"

    async def scenario() -> None:
        async with serving(config):
            pass

    asyncio.run(scenario())
    menus = api.sent("setMyCommands")
    assert any(
        "persona" in c.params["commands"] and str(ADMIN) in c.params.get("scope", "") for c in menus
    )
    assert any("persona" not in c.params["commands"] for c in menus)


def test_multi_line_reply_goes_out_line_by_line_with_pauses(api: BotApiStandIn) -> None:
    from telegram import Bot

    settings = BotConfig(line_pause_per_char=0.01, max_line_pause=0.3)
    reply = "ok ok\n\nsee you at 7\n" + "y" * 5000

    async def scenario() -> None:
        async with Bot(TOKEN, base_url=f"{api.url}/bot") as bot:
            await delivery.send_reply(bot, 5, reply, settings)

    asyncio.run(scenario())
    sent = api.sent(chat_id=5)
    assert [c.params["text"] for c in sent] == ["ok ok", "see you at 7", "y" * 4096, "y" * 904]
    assert sent[1].at - sent[0].at >= 0.12  # 12 characters at 0.01 s
    assert sent[2].at - sent[1].at >= 0.3  # capped at max_line_pause
    assert api.sent("sendChatAction", chat_id=5)  # "typing…" between the lines


def test_webhook_mode(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        telegram={"webhook_url": "https://twin.example.org/telegram", "webhook_port": port},
    )
    monkeypatch.setenv("TWIN_WEBHOOK_SECRET", "s3cret-token")
    update = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "date": 0,
            "chat": {"id": 1, "type": "private"},
            "from": {"id": 1, "is_bot": False, "first_name": "Ann"},
            "text": "hello via webhook",
        },
    }

    async def scenario() -> None:
        async with serving(config), httpx.AsyncClient() as client:
            (registered,) = api.sent("setWebhook")
            assert registered.params["url"] == "https://twin.example.org/telegram"
            assert registered.params["secret_token"] == "s3cret-token"
            url = f"http://127.0.0.1:{port}/telegram"
            forged = await client.post(url, json=update)
            assert forged.status_code == 403  # no secret header: not from Telegram
            headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
            accepted = await client.post(url, json=update, headers=headers)
            assert accepted.status_code == 200
            await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1)
            assert len(api.sent("sendMessage")) == len(api.sent(chat_id=1))

    asyncio.run(scenario())
