"""The bot end to end: the real Application against the Bot API stand-in, over HTTP: who is
answered where, groups and topics, media, delivery, batching, the chat log. (Starting and
stopping `twin serve`, webhooks: test_serve.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from tenacity import wait_fixed

from bot import delivery
from tests.bot.botapi import TOKEN, BotApiStandIn
from tests.bot.helpers import (
    ADMIN,
    FRIENDS,
    GROUP,
    STRANGER,
    bot_config,
    said,
    serving,
    turns,
)
from tests.serving.openai_standin import OpenAIStandIn
from twin.core.config import BotConfig

MENTION = "@twin_test_bot what do you think?"
MENTION_ENTITY = [{"type": "mention", "offset": 0, "length": 14}]
IN_GROUP = {"chat_id": GROUP, "chat_type": "supergroup"}


@pytest.mark.anyio
async def test_allowed_user_is_answered_with_typing_and_logged(
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
        assert not runtime.chat_log.paused


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
async def test_forum_topics_have_their_own_chat_log_and_typing(
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
        # Not delivered, so not logged as said: the chat log matches what they saw.
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
async def test_reset_and_the_chat_log_survives_a_restart(
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
