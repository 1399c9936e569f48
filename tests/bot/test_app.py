"""`twin serve` end to end: the real Application against the Bot API stand-in, over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_fixed

from bot import delivery
from bot.app import build_application
from tests.bot.botapi import TOKEN, BotApiStandIn
from tests.bot.conftest import (
    ADMIN,
    FRIENDS,
    GROUP,
    STRANGER,
    bot_config,
    said,
    serving,
    turns,
)
from tests.conftest import twin_command
from tests.serving.openai_standin import OpenAIStandIn
from twin.app.cli import main
from twin.core.config import BotConfig, Config

MENTION = "@twin_test_bot what do you think?"
MENTION_ENTITY = [{"type": "mention", "offset": 0, "length": 14}]
IN_GROUP = {"chat_id": GROUP, "chat_type": "supergroup"}


@pytest.mark.anyio
async def test_allowed_user_is_answered_with_typing_and_memory(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config) as runtime:
        api.push_message(1, "hey, coffee later?")
        await api.wait_for(lambda a: len(said(runtime, 1)) == 2)
        assert api.sent("sendChatAction", chat_id=1), "no typing… while the model worked"
        assert api.sent("sendChatAction")[0].params["action"] == "typing"
        (who, text), (owner, reply) = said(runtime, 1)
        assert (who, text) == ("1", "hey, coffee later?")
        assert owner == "owner"
        # Each line of the reply went out as its own message.
        assert [line.strip() for line in reply.splitlines() if line.strip()] == api.texts(1)


@pytest.mark.anyio
async def test_stranger_gets_one_notice_and_never_model_output(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config) as runtime:
        api.push_message(STRANGER, "who are you?")
        api.push_message(STRANGER, "hello??")
        api.push_message(STRANGER, "/persona status")
        await api.wait_for(lambda a: len(a.sent(chat_id=STRANGER)) >= 1)
        await api.settle()
        assert api.texts(STRANGER) == [config.telegram.stranger_reply]
        assert runtime.worker.stats.replies == 0
        assert said(runtime, STRANGER) == []


@pytest.mark.anyio
async def test_silent_stranger_reply_and_non_admin_persona(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url, telegram={"stranger_reply": ""})
    async with serving(config) as runtime:
        api.push_message(STRANGER, "hi")
        api.push_message(1, "/persona status")  # a friend, not an admin
        api.push_message(1, "/persona pause")
        await api.settle(1.0)
        assert api.sent() == []
        assert not runtime.memory.paused


@pytest.mark.anyio
async def test_groups_answer_only_when_addressed_in_allowed_chats(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config) as runtime:
        api.push_message(1, "just chatting among us", **IN_GROUP)
        api.push_message(2, "nobody asked the bot", **IN_GROUP, first_name="Bob")
        api.push_message(3, MENTION, chat_id=-555, chat_type="group", entities=MENTION_ENTITY)
        await api.settle(1.0)
        assert api.sent() == []  # not addressed, or not an allowed group
        api.push_message(1, MENTION, **IN_GROUP, entities=MENTION_ENTITY)
        await api.wait_for(lambda a: len(a.sent(chat_id=GROUP)) == 1)
        first = api.sent(chat_id=GROUP)[0]
        assert '"message_id"' in first.params["reply_parameters"]
        bot_message = {
            "message_id": 1,
            "date": 0,
            "chat": {"id": GROUP, "type": "supergroup"},
            "from": {"id": 999_000, "is_bot": True, "first_name": "Twin"},
        }
        api.push_message(2, "and you?", **IN_GROUP, first_name="Bob", reply_to_message=bot_message)
        await api.wait_for(lambda a: len(a.sent(chat_id=GROUP)) >= 2)
        # A group: user turns carry their names, as in group training data.
        user_turns = [
            t["content"] for t in turns(runtime, GROUP, group=True) if t["role"] == "user"
        ]
        assert user_turns[0].startswith("Ann: just chatting")
        assert user_turns[-1] == "Bob: and you?"
        assert all("@twin_test_bot" not in t for t in user_turns)


@pytest.mark.anyio
@pytest.mark.parametrize(("policy", "answered"), [("listed", False), ("everyone", True)])
async def test_group_members_policy_decides_who_gets_model_output(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, policy: str, answered: bool
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url, telegram={"group_members": policy})
    unlisted = 555
    async with serving(config) as runtime:
        api.push_message(unlisted, MENTION, **IN_GROUP, first_name="Eve", entities=MENTION_ENTITY)
        if answered:
            await api.wait_for(lambda a: len(a.sent(chat_id=GROUP)) == 1)
        else:
            await api.settle(1.0)
            assert api.sent(chat_id=GROUP) == []
            assert runtime.worker.stats.replies == 0
        # Either way what Eve said is context for the group's later replies.
        assert said(runtime, GROUP)[0] == (str(unlisted), "what do you think?")


@pytest.mark.anyio
async def test_only_admins_reset_a_group(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url, telegram={"group_members": "everyone"})
    async with serving(config) as runtime:
        api.push_message(1, "a plan for saturday", **IN_GROUP)
        api.push_message(555, "/reset", **IN_GROUP, first_name="Eve")  # not an admin
        api.push_message(2, "/reset", **IN_GROUP, first_name="Bob")  # a friend, not an admin
        await api.settle(1.0)
        assert api.sent(chat_id=GROUP) == []
        assert [text for _, text in said(runtime, GROUP)] == ["a plan for saturday"]
        api.push_message(ADMIN, "/reset", **IN_GROUP, first_name="Owner")
        await api.wait_for(lambda a: "Memory of this chat cleared." in a.texts(GROUP))
        assert said(runtime, GROUP) == []


@pytest.mark.anyio
async def test_two_members_with_one_name_stay_two_speakers(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config) as runtime:
        api.push_message(3, "I'm Ann from work", **IN_GROUP, first_name="Ann")
        api.push_message(4, "and I'm the other Ann, she's lying", **IN_GROUP, first_name="Ann")
        api.push_message(3, MENTION, **IN_GROUP, first_name="Ann", entities=MENTION_ENTITY)
        await api.wait_for(lambda a: len(a.sent(chat_id=GROUP)) == 1)
        user_turns = [
            t["content"] for t in turns(runtime, GROUP, group=True) if t["role"] == "user"
        ]
        # Three turns, not one merged "Ann" turn in which one Ann speaks for the other.
        assert user_turns == [
            "Ann: I'm Ann from work",
            "Ann: and I'm the other Ann, she's lying",
            "Ann: what do you think?",
        ]


@pytest.mark.anyio
async def test_forum_topics_have_their_own_memory_and_typing(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    topic = {**IN_GROUP, "is_topic_message": True}
    async with serving(config) as runtime:
        api.push_message(1, "topic A: the climbing trip", **topic, message_thread_id=11)
        api.push_message(
            2, MENTION, **topic, message_thread_id=22, first_name="Bob", entities=MENTION_ENTITY
        )
        await api.wait_for(lambda a: len(a.sent(chat_id=GROUP)) == 1)
        assert [t for _, t in said(runtime, GROUP, 11)] == ["topic A: the climbing trip"]
        prompt = turns(runtime, GROUP, group=True, thread_id=22)
        assert "climbing" not in str(prompt)  # topic A's talk is not B's context
        (reply,) = api.sent(chat_id=GROUP)
        assert int(reply.params["message_thread_id"]) == 22
        typing = api.sent("sendChatAction", chat_id=GROUP)
        assert typing and all(int(c.params["message_thread_id"]) == 22 for c in typing)


@pytest.mark.anyio
async def test_odd_updates_never_crash_it(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
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
    async with serving(config) as runtime:
        api.push_message(1, None, photo=photo, caption="look at this view")
        api.push_message(2, None, sticker=sticker)
        api.push_message(3, None, voice={"file_id": "v", "file_unique_id": "v", "duration": 3})
        api.push_message(4, None, new_chat_members=[{"id": 5, "is_bot": False, "first_name": "X"}])
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
        assert said(runtime, 1)[0] == ("1", "look at this view")
        assert said(runtime, 2)[0] == ("2", "[sticker]")
        assert said(runtime, 3)[0] == ("3", "[voice message]")
        assert said(runtime, 5) == []  # unknown commands are not conversation
        # The bot is still fine after all that.
        api.push_message(7, "still there?")
        await api.wait_for(lambda a: len(a.sent(chat_id=7)) >= 1)


@pytest.mark.anyio
async def test_media_ignored_when_configured(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url, bot={"media": "ignore"})
    async with serving(config):
        api.push_message(2, None, voice={"file_id": "v", "file_unique_id": "v", "duration": 3})
        api.push_message(3, "text still works")
        await api.wait_for(lambda a: len(a.sent(chat_id=3)) >= 1)
        await api.settle()
        assert api.sent(chat_id=2) == []


@pytest.mark.anyio
async def test_reply_delivered_after_429_and_500(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config) as runtime:
        api.fail("sendMessage", 429, retry_after=1)
        api.fail("sendMessage", 500)
        api.push_message(1, "are you there?")
        await api.wait_for(lambda a: len(said(runtime, 1)) == 2)
        attempts = [c for c in api.calls if c.method == "sendMessage"]
        assert [c.status for c in attempts[:3]] == [429, 500, 200]
        assert attempts[1].at - attempts[0].at >= 0.9  # retry_after honoured
        assert attempts[0].params["text"] == attempts[2].params["text"]
        assert said(runtime, 1)[-1][0] == "owner"


@pytest.mark.anyio
async def test_failed_reply_is_logged_with_chat_id_not_text(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    monkey_attempts = delivery.SEND_ATTEMPTS
    monkeypatch.setattr(delivery, "RETRY_WAIT", wait_fixed(0.05))
    caplog.set_level("INFO")
    async with serving(config) as runtime:
        for _ in range(monkey_attempts):
            api.fail("sendMessage", 502)
        api.push_message(1, "my secret plans")
        await api.wait_for(
            lambda a: sum(c.method == "sendMessage" for c in a.calls) >= monkey_attempts, 60
        )
        await api.settle()
        # Not delivered, so not remembered as said: the chat's memory matches what they saw.
        assert [who for who, _ in said(runtime, 1)] == ["1"]

    failures = [r for r in caplog.records if "could not send" in r.getMessage()]
    assert failures and "chat 1" in failures[0].getMessage()
    assert "secret" not in caplog.text


@pytest.mark.anyio
async def test_twenty_concurrent_chats_are_batched(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config) as runtime:
        for user in FRIENDS:
            api.push_message(user, f"hi, it's {user}. how was your day?")
        await api.wait_for(lambda a: {c.chat_id for c in a.sent()} == set(FRIENDS), 60)
        stats = runtime.worker.stats
        assert stats.replies == 20
        assert stats.generate_calls < 20
        assert stats.largest_batch > 1


@pytest.mark.anyio
async def test_an_empty_sampled_reply_is_sampled_again_not_left_unanswered(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    with OpenAIStandIn() as engine:
        config = bot_config(
            tmp_path,
            tiny_base,
            api.url,
            serving={"engine": "openai", "url": engine.url},
            generation={"max_new_tokens": 8, "temperature": 0.7},
        )
        engine.answer_empty(1)  # the model ends its turn at once, this one time
        async with serving(config) as runtime:
            api.push_message(1, "hey, coffee later?")
            await api.wait_for(lambda a: bool(a.texts(1)), 30)
            assert runtime.worker.stats.resampled == 1
        first, second = engine.calls_to("/completions")
        assert first.body["prompt"] == second.body["prompt"]  # the same conversation, again
        (prompt,) = second.body["prompt"]  # a batch of one
        assert api.texts(1) == [OpenAIStandIn.reply_for(engine.base, prompt)]


@pytest.mark.anyio
async def test_a_burst_from_one_chat_gets_one_reply(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config) as runtime:
        for user in FRIENDS[1:10]:  # keep the model busy so the burst queues up
            api.push_message(user, "hello there")
        for text in ("wait", "one more thing", "are you free tonight?"):
            api.push_message(1, text)
        await api.wait_for(lambda a: {c.chat_id for c in a.sent()} >= set(FRIENDS[:10]))
        await api.settle()
        prompt = turns(runtime, 1)
        assert prompt[0] == {
            "role": "user",
            "content": "wait\none more thing\nare you free tonight?",
        }
        assert [t["role"] for t in prompt] == ["user", "assistant"]


@pytest.mark.anyio
async def test_reset_and_memory_survives_a_restart(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config):
        api.push_message(1, "remember: the meeting is on friday")
        api.push_message(2, "something for chat two")
        await api.wait_for(lambda a: {1, 2} <= {c.chat_id for c in a.sent()})
        await api.settle()
    async with serving(config) as runtime:
        assert said(runtime, 1)[0] == ("1", "remember: the meeting is on friday")
        api.push_message(2, "/reset")
        await api.wait_for(lambda a: "Memory of this chat cleared." in a.texts(2))
        assert said(runtime, 2) == []
        assert len(said(runtime, 1)) == 2


def test_serve_needs_the_token(
    tmp_path: Path,
    tiny_base: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = bot_config(tmp_path, tiny_base, "http://127.0.0.1:9")
    monkeypatch.delenv("TWIN_BOT_TOKEN", raising=False)
    assert main(["--config", str(config.source), "serve"]) == 1
    assert "TWIN_BOT_TOKEN is not set" in capsys.readouterr().err


@pytest.mark.anyio
async def test_bot_api_url_and_token_reach_the_stand_in(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url + "/")
    app = build_application(config, TOKEN)
    assert app.bot.base_url == f"{api.url}/bot{TOKEN}"
    async with serving(config):
        pass
    menus = api.sent("setMyCommands")
    assert any(
        "persona" in c.params["commands"] and str(ADMIN) in c.params.get("scope", "") for c in menus
    )
    assert any("persona" not in c.params["commands"] for c in menus)


@pytest.mark.anyio
async def test_multi_line_reply_goes_out_line_by_line_with_pauses(api: BotApiStandIn) -> None:
    from telegram import Bot

    settings = BotConfig(line_pause_per_char=0.01, max_line_pause=0.3)
    reply = "ok ok\n\nsee you at 7\n" + "y" * 5000
    async with Bot(TOKEN, base_url=f"{api.url}/bot") as bot:
        await delivery.send_reply(bot, 5, reply, settings)
    sent = api.sent(chat_id=5)
    assert [c.params["text"] for c in sent] == ["ok ok", "see you at 7", "y" * 4096, "y" * 904]
    assert sent[1].at - sent[0].at >= 0.12  # 12 characters at 0.01 s
    assert sent[2].at - sent[1].at >= 0.3  # capped at max_line_pause
    assert api.sent("sendChatAction", chat_id=5)  # "typing…" between the lines


def webhook_config(tmp_path: Path, tiny_base: Path, api: BotApiStandIn) -> tuple[Config, int]:
    """A bot config in webhook mode, listening on a free local port (returned with it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        telegram={"webhook_url": "https://twin.example.org/telegram", "webhook_port": port},
    )
    return config, port


def private_update(update_id: int, user: int, name: str, text: str) -> dict[str, Any]:
    """A Bot API update: `user` writes `text` to the bot in a private chat."""
    message: dict[str, Any] = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": user, "type": "private"},
        "from": {"id": user, "is_bot": False, "first_name": name},
        "text": text,
    }
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return {"update_id": update_id, "message": message}


@pytest.mark.anyio
async def test_webhook_mode(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    config, port = webhook_config(tmp_path, tiny_base, api)
    monkeypatch.setenv("TWIN_WEBHOOK_SECRET", "s3cret-token")
    update = private_update(1, 1, "Ann", "hello via webhook")
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


@pytest.mark.anyio
async def test_webhook_without_a_configured_secret_still_refuses_forged_updates(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    config, port = webhook_config(tmp_path, tiny_base, api)
    monkeypatch.delenv("TWIN_WEBHOOK_SECRET", raising=False)
    forged = private_update(7, ADMIN, "Owner", "/persona pause")
    async with serving(config) as runtime, httpx.AsyncClient() as client:
        (registered,) = api.sent("setWebhook")
        secret = registered.params["secret_token"]
        assert len(secret) >= 32  # generated and registered with Telegram
        url = f"http://127.0.0.1:{port}/telegram"
        assert (await client.post(url, json=forged)).status_code == 403
        wrong = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
        assert (await client.post(url, json=forged, headers=wrong)).status_code == 403
        await api.settle()
        assert not runtime.memory.paused


def test_a_webhook_secret_telegram_would_refuse_is_one_line_without_it(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _port = webhook_config(tmp_path, tiny_base, api)
    monkeypatch.setenv("TWIN_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TWIN_WEBHOOK_SECRET", "my secret!")
    assert main(["--config", str(config.source), "serve"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "twin: error: TWIN_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
        "(Telegram's rule for a webhook secret)"
    )
    assert not api.calls  # refused before the bot said a word to Telegram


def test_a_prompt_the_served_tokenizer_cannot_fit_stops_serve_in_one_line(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """config.toml's check estimates 3 characters a token; CJK characters take more than one
    token each here, so only the served tokenizer can tell that this prompt leaves no room."""
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        persona={"system_prompt": "漢" * 300},
        bot={"context_tokens": 512},
    )
    monkeypatch.setenv("TWIN_BOT_TOKEN", TOKEN)
    assert main(["--config", str(config.source), "serve"]) == 1
    # (In this process transformers was imported before the CLI could quiet its loading bar.)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("twin: error: the persona system prompt and one message take ")
    assert err.endswith(
        "but [bot] context_tokens 512 minus [generation] max_new_tokens 8 leaves 504: raise "
        "context_tokens, lower max_new_tokens or shorten the prompt"
    )
    assert not api.sent("sendMessage")


def test_a_rejected_token_is_one_line_without_the_token(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    monkeypatch.setenv("TWIN_BOT_TOKEN", "424242:WRONG-very-secret")
    assert main(["--config", str(config.source), "serve"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "twin: error: Telegram rejected TWIN_BOT_TOKEN: check it (from @BotFather, "
        "/mybots -> API Token)"
    )
    assert "very-secret" not in err and "Traceback" not in err


def test_sigterm_stops_serve_within_seconds_even_mid_reply(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    # A long greedy reply from the tiny model (it never picks its end-of-turn token).
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        generation={"max_new_tokens": 4000, "temperature": 0.0},
        bot={"context_tokens": 8192},
    )
    env = {**os.environ, "TWIN_BOT_TOKEN": TOKEN}
    process = subprocess.Popen(
        twin_command(config, "serve"), env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        api.push_message(1, "tell me everything")
        deadline = time.monotonic() + 120
        while not api.sent("sendChatAction", chat_id=1):  # the model is at work
            assert process.poll() is None and time.monotonic() < deadline, api.summary()
            time.sleep(0.05)
        time.sleep(1.0)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        stopped_in = time.monotonic() - signalled
    finally:
        process.kill()
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    assert stopped_in < 5, f"took {stopped_in:.1f} s to stop"
    assert api.sent(chat_id=1) == []  # the interrupted reply was not sent half-written
