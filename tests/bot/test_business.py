"""Telegram Business end to end: the real Application against the Bot API stand-in, which
plays the owner's connected account (connection updates, friends' and the owner's messages,
echoes of the bot's sends, deletions, edits, button presses, getBusinessConnection).

The owner is ADMIN (42): nothing is imported in most tests, so the first admin is the owner.
FRIEND (7) is in allowed_users, a contact; NON_CONTACT is nobody the owner ever wrote to.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bot.chat_log import Where
from bot.context import BotRuntime
from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.store import open_store
from tests.bot.botapi import BotApiStandIn, Call
from tests.bot.helpers import ADMIN, bot_config, said, serving
from tests.bot.test_recall import OWNER_ID, remember
from twin.app.status import status_of
from twin.core.config import Config

CONNECTION = "biz-1"
FRIEND = 7
NON_CONTACT = 555
OTHER_ACCOUNT = 9000  # someone else who connects the bot to their own account


def owners_chat(runtime: BotRuntime, chat_id: int = FRIEND) -> list[tuple[str, str]]:
    """The business conversation with `chat_id` in the chat log, as (speaker, text)."""
    return [(s.speaker, s.text) for s in runtime.chat_log.recent(Where(chat_id, 0, ADMIN))]


def notices(api: BotApiStandIn) -> list[Call]:
    """Draft notices in the owner's chat with the bot (messages sent with buttons)."""
    return [c for c in api.sent("sendMessage", chat_id=ADMIN) if "reply_markup" in c.params]


def pressed(api: BotApiStandIn, notice: Call, action: str, user: int = ADMIN) -> int:
    """Press a draft's button, with the callback data the bot sent it with (a client that
    has not seen the buttons go can still press them)."""
    markup = notice.params["reply_markup"]
    rows = (json.loads(markup) if isinstance(markup, str) else markup)["inline_keyboard"]
    (data,) = [
        b["callback_data"] for row in rows for b in row if f":{action}:" in b["callback_data"]
    ]
    return api.push_callback(user, ADMIN, notice.result["message_id"], data)


def draft_of(api: BotApiStandIn, notice: Call) -> str:
    return str(notice.params["text"]).rsplit("\n\n", 1)[1].split("\n", 1)[1]


def callback_answers(api: BotApiStandIn) -> list[dict[str, Any]]:
    return [c.params for c in api.sent("answerCallbackQuery")]


def business_config(tmp_path: Path, tiny_base: Path, api: BotApiStandIn, **business: Any) -> Config:
    return bot_config(
        tmp_path,
        tiny_base,
        api.url,
        business={"takeover_minutes": 30.0, **business},
        memory={"enabled": False},
    )


async def connected(api: BotApiStandIn, runtime: BotRuntime, **rights: Any) -> None:
    api.push_business_connection(CONNECTION, ADMIN, **rights)
    await api.wait_for(lambda a: runtime.business.connection(CONNECTION) is not None)


async def a_draft(api: BotApiStandIn, text: str = "are you coming tonight?", **kw: Any) -> Call:
    before = len(notices(api))
    api.push_business_message(CONNECTION, FRIEND, FRIEND, text, first_name="Ann", **kw)
    await api.wait_for(lambda a: len(notices(a)) > before)
    return notices(api)[-1]


@pytest.mark.anyio
async def test_a_friends_message_becomes_a_draft_the_owner_sends(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        assert "Connected" in api.texts(ADMIN)[-1]  # the owner learns the connection works
        notice = await a_draft(api)
        # Nothing reached the friend yet, and the friend saw no "typing…" for a draft.
        assert api.business_texts() == []
        assert not [c for c in api.sent("sendChatAction") if c.business]
        assert "Ann (7) wrote:\nare you coming tonight?" in notice.params["text"]
        labels = [text for text, _ in api.buttons(ADMIN, notice.result["message_id"])]
        assert labels == ["Send", "Skip", "Edit: reply to this with your text"]
        draft = draft_of(api, notice)
        pressed(api, notice, "send")
        await api.wait_for(lambda a: a.business_texts() != [])
        await api.settle(0.3)
        # Sent once, as the owner, through the connection, into the friend's chat.
        sends = [c for c in api.sent("sendMessage") if c.business]
        assert {(c.business, c.chat_id) for c in sends} == {(CONNECTION, FRIEND)}
        assert "\n".join(api.business_texts(CONNECTION, FRIEND)) == "\n".join(
            line.strip() for line in draft.splitlines() if line.strip()
        )
        assert api.message_text(ADMIN, notice.result["message_id"]).endswith("Sent.")
        assert api.buttons(ADMIN, notice.result["message_id"]) == []
        assert callback_answers(api)[-1]["text"] == "Sent."
        # The echo of the send is not a message to answer, nor the owner taking over.
        assert len(notices(api)) == 1
        assert owners_chat(runtime)[-1][0] == "owner"
        assert runtime.business.correction_counts()["sent"] == 1
    # The friend's message and the draft the owner chose joined the store, as the owner's.
    with open_store(config.store_path) as store:
        stored = list(store.messages_of(FRIEND))
    assert [m.sender_id for m in stored] == [FRIEND] + [ADMIN] * (len(stored) - 1)
    assert stored[0].text == "are you coming tonight?"
    assert status_of(config)["corrections"]["sent"] == 1


@pytest.mark.anyio
async def test_edit_sends_the_owners_reply_instead(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api)
        pressed(api, notice, "edit")
        await api.wait_for(lambda a: callback_answers(a) != [])
        assert "Reply to the draft" in callback_answers(api)[0]["text"]
        assert api.business_texts() == []
        api.push_message(ADMIN, "yes, at 8!", first_name="Owner", reply_to_message=notice.result)
        await api.wait_for(lambda a: a.business_texts() != [])
        await api.settle(0.3)
        assert api.business_texts(CONNECTION, FRIEND) == ["yes, at 8!"]
        # The owner's reply was the text to send, not a message for the twin to answer.
        assert api.texts(ADMIN)[-1] == "Sent your text."
        assert runtime.worker.stats.replies == 1  # the draft only
        assert owners_chat(runtime)[-1] == ("owner", "yes, at 8!")
        assert runtime.business.correction_counts()["edited"] == 1
        row = runtime.chat_log.conn.execute("SELECT draft, sent FROM corrections").fetchone()
        assert row == (draft_of(api, notice), "yes, at 8!")
        # The draft cannot go out afterwards as well.
        pressed(api, notice, "send")
        await api.wait_for(lambda a: len(callback_answers(a)) == 2)
        assert callback_answers(api)[-1]["text"] == "Already handled."
        assert api.business_texts() == ["yes, at 8!"]


@pytest.mark.anyio
async def test_skip_drops_the_draft_and_keeps_the_verdict(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api, "call me +1 202 555 0143")
        pressed(api, notice, "skip")
        await api.wait_for(lambda a: callback_answers(a) != [])
        await api.settle(0.3)
        assert api.business_texts() == []
        assert api.message_text(ADMIN, notice.result["message_id"]).endswith("Skipped.")
        counts = runtime.business.correction_counts()
        assert (counts["skipped"], counts["total"]) == (1, 1)
        turns = runtime.chat_log.conn.execute("SELECT turns FROM corrections").fetchone()[0]
        # Kept PII-masked, like the dataset.
        assert "555 0143" not in turns and "call me" in turns


@pytest.mark.anyio
async def test_only_the_owner_presses_and_a_double_press_sends_once(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api)
        pressed(api, notice, "send", user=FRIEND)
        await api.wait_for(lambda a: callback_answers(a) != [])
        assert callback_answers(api)[0]["text"] == "Only the owner's presses count."
        await api.settle(0.3)
        assert api.business_texts() == []
        pressed(api, notice, "send")
        pressed(api, notice, "send")
        await api.wait_for(lambda a: len(callback_answers(a)) == 3)
        await api.settle(0.3)
        lines = [line for line in draft_of(api, notice).splitlines() if line.strip()]
        assert len(api.business_texts()) == len(lines)
        assert sorted(c["text"] for c in callback_answers(api)[1:]) == [
            "Already handled.",
            "Sent.",
        ]
        assert runtime.business.correction_counts()["total"] == 1


@pytest.mark.anyio
async def test_a_deleted_message_expires_its_draft(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api, "oops, wrong chat")
        asked = runtime.business.pending()[0].asked
        api.push_deleted_business_messages(CONNECTION, FRIEND, list(asked))
        await api.wait_for(
            lambda a: "deleted" in a.message_text(ADMIN, notice.result["message_id"])
        )
        pressed(api, notice, "send")
        await api.wait_for(lambda a: callback_answers(a) != [])
        assert callback_answers(api)[0]["text"] == "Already handled."
        assert api.business_texts() == []
        assert owners_chat(runtime) == []
    with open_store(config.store_path) as store:
        assert list(store.messages_of(FRIEND)) == []  # deleted in Telegram, deleted here


@pytest.mark.anyio
async def test_a_draft_expires_with_telegrams_reply_window(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        # Written 24 hours ago, less a few seconds: the draft is made, then the window closes.
        notice = await a_draft(api, "still there?", date=int(time.time()) - 24 * 3600 + 4)
        await api.settle(max(0.0, runtime.business.pending()[0].expires - time.time()) + 0.2)
        pressed(api, notice, "send")
        await api.wait_for(lambda a: callback_answers(a) != [])
        assert callback_answers(api)[0]["text"].startswith("Expired")
        assert api.business_texts() == []
        # A message whose window has already closed gets no draft at all.
        api.push_business_message(
            CONNECTION, FRIEND, FRIEND, "hello?", date=int(time.time()) - 25 * 3600
        )
        await api.settle(1.0)
        assert len(notices(api)) == 1


@pytest.mark.anyio
async def test_the_owner_typing_takes_the_chat_over(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api)
        api.push_business_message(CONNECTION, FRIEND, ADMIN, "coming, wait for me")
        await api.wait_for(
            lambda a: "answered yourself" in a.message_text(ADMIN, notice.result["message_id"])
        )
        api.push_business_message(CONNECTION, FRIEND, FRIEND, "great, see you")
        await api.settle(1.0)
        assert len(notices(api)) == 1  # silent for takeover_minutes
        assert owners_chat(runtime)[-2:] == [
            ("owner", "coming, wait for me"),
            (str(FRIEND), "great, see you"),
        ]
        # Another friend's chat is not silenced.
        api.push_business_message(CONNECTION, 8, 8, "hi!", first_name="Bob")
        await api.wait_for(lambda a: len(notices(a)) == 2)


@pytest.mark.anyio
async def test_an_echo_of_the_bots_own_send_is_not_answered(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api, mode="auto")
    async with serving(config) as runtime:
        await connected(api, runtime)
        api.push_business_message(
            CONNECTION, FRIEND, ADMIN, "an old send of the twin", sender_business_bot=True
        )
        await api.settle(1.0)
        assert owners_chat(runtime) == []  # neither answered, kept, nor a takeover
        assert runtime.business.silent_until(Where(FRIEND, 0, ADMIN)) == 0
        api.push_business_message(CONNECTION, FRIEND, FRIEND, "ping")
        await api.wait_for(lambda a: a.business_texts() != [])
        await api.settle(0.5)
        # The auto reply's own echo (the stand-in sends one for each) got no reply either.
        assert runtime.worker.stats.replies == 1


@pytest.mark.anyio
async def test_someone_elses_connection_is_refused(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api, mode="auto")
    async with serving(config) as runtime:
        api.push_business_connection("theirs", OTHER_ACCOUNT, first_name="Eve")
        await api.wait_for(lambda a: a.texts(ADMIN) != [])
        assert f"User {OTHER_ACCOUNT} connected" in api.texts(ADMIN)[0]
        api.push_business_message("theirs", FRIEND, FRIEND, "hello Eve")
        api.push_business_connection("theirs", OTHER_ACCOUNT, first_name="Eve")
        # A connection the bot never saw: asked of Telegram, and refused just the same.
        api.add_business_connection("theirs-2", OTHER_ACCOUNT)
        api.push_business_message("theirs-2", FRIEND, FRIEND, "hello again")
        await api.wait_for(lambda a: a.sent("getBusinessConnection") != [])
        await api.settle(1.0)
        assert len(api.texts(ADMIN)) == 1  # the admins were told once
        assert api.texts(OTHER_ACCOUNT) == [] and api.business_texts() == []
        assert runtime.worker.stats.replies == 0
        assert runtime.chat_log.recent(Where(FRIEND, 0, OTHER_ACCOUNT)) == []
    assert not config.store_path.exists()  # nothing of theirs was kept


@pytest.mark.anyio
async def test_a_connection_without_the_right_to_reply_stops_replies(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime, can_reply=False)
        assert "allow it to reply" in api.texts(ADMIN)[-1]
        api.push_business_message(CONNECTION, FRIEND, FRIEND, "hi")
        await api.settle(1.0)
        assert notices(api) == [] and runtime.worker.stats.replies == 0
        api.push_business_connection(CONNECTION, ADMIN, is_enabled=False)
        await api.wait_for(lambda a: "connection is off" in a.texts(ADMIN)[-1])
        api.push_business_connection(CONNECTION, ADMIN)
        await api.wait_for(lambda a: "Connected" in a.texts(ADMIN)[-1])
        await a_draft(api, "and now?")
    with open_store(config.store_path) as store:  # read access still learns
        assert [m.text for m in store.messages_of(FRIEND)] == ["hi", "and now?"]


@pytest.mark.anyio
async def test_auto_mode_answers_contacts_paced_and_drafts_for_others(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        business={"mode": "auto"},
        bot={"line_pause_per_char": 0.05, "max_line_pause": 0.5},
        memory={"enabled": False},
    )
    async with serving(config) as runtime:
        await connected(api, runtime)
        update = api.push_business_message(CONNECTION, FRIEND, FRIEND, "ping")
        await api.wait_for(lambda a: a.business_texts() != [])
        first = next(c for c in api.sent("sendMessage") if c.business)
        typing = [c for c in api.sent("sendChatAction") if c.business == CONNECTION]
        assert typing and typing[0].chat_id == FRIEND and typing[0].at < first.at
        line = first.params["text"]
        pause = min(len(line) * 0.05, 0.5)
        # Paced like typing: the first line waited as long as typing it would take.
        assert first.at - api.pushed_at[update] >= pause
        assert [c for c in typing if c.at <= first.at][-1].at <= first.at - pause + 0.05
        assert notices(api) == []
        # Someone the owner never wrote to gets a draft, not an auto reply.
        sends = len(api.business_texts())
        api.push_business_message(CONNECTION, NON_CONTACT, NON_CONTACT, "hi, I'm new")
        await api.wait_for(lambda a: notices(a) != [])
        assert len(api.business_texts()) == sends


@pytest.mark.anyio
async def test_the_business_chat_and_the_friends_bot_chat_are_two_conversations(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        api.push_message(FRIEND, "to the bot")
        await api.wait_for(lambda a: len(said(runtime, FRIEND)) == 2)
        await a_draft(api, "to the owner")
        assert said(runtime, FRIEND)[0] == (str(FRIEND), "to the bot")
        assert owners_chat(runtime) == [(str(FRIEND), "to the owner")]
        # The draft was written after the business conversation only.
        turns = runtime.business.pending()[0].turns
        assert [t["content"] for t in turns] == ["to the owner"]


@pytest.mark.anyio
async def test_persona_business_shows_and_sets_modes(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        api.push_message(ADMIN, "/persona business")
        await api.wait_for(lambda a: a.texts(ADMIN) != [])
        assert "not connected" in api.texts(ADMIN)[-1]
        await connected(api, runtime)
        await a_draft(api)
        for command in (f"/persona business off {FRIEND}", "/persona business auto"):
            answers = len(api.texts(ADMIN))
            api.push_message(ADMIN, command)
            await api.wait_for(lambda a, n=answers: len(a.texts(ADMIN)) > n)
        api.push_message(ADMIN, "/persona business")
        await api.wait_for(lambda a: "Drafts waiting" in a.texts(ADMIN)[-1])
        status = api.texts(ADMIN)[-1]
        assert "connected, on; may reply" in status
        assert "Mode for all chats: auto" in status
        assert f"{FRIEND} off" in status
        assert "Drafts waiting for you: 1 (chats 7)" in status
        # The chat set to off gets nothing; the mode for all is saved like /persona set.
        api.push_business_message(CONNECTION, FRIEND, FRIEND, "anyone?")
        await api.settle(1.0)
        assert api.business_texts() == [] and len(notices(api)) == 1
        assert json.loads(config.overrides_path.read_text())["business"]["mode"] == "auto"


@pytest.mark.anyio
async def test_drafts_speak_the_owners_language(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(
        tmp_path, tiny_base, api.url, persona={"language": "ru"}, memory={"enabled": False}
    )
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api, "привет, как дела?")
        labels = [text for text, _ in api.buttons(ADMIN, notice.result["message_id"])]
        assert labels == ["Отправить", "Пропустить", "Изменить: ответьте на это своим текстом"]
        assert "Ann (7) пишет:" in notice.params["text"]


def stored_texts(config: Config, chat_id: int) -> list[str]:
    with open_store(config.store_path) as store:
        return [m.text for m in store.messages_of(chat_id)]


def export_with(path: Path, messages: list[dict[str, Any]]) -> Path:
    """A Telegram Desktop export of the owner's (ADMIN's) chat with FRIEND."""
    export = {
        "personal_information": {"user_id": ADMIN, "first_name": "Owner"},
        "chats": {
            "list": [{"name": "Ann", "type": "personal_chat", "id": FRIEND, "messages": messages}]
        },
    }
    path.write_text(json.dumps(export))
    return path


@pytest.mark.anyio
async def test_live_history_joins_the_store_once_with_edits(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api, mode="off")
    now = int(time.time())
    async with serving(config) as runtime:
        await connected(api, runtime)
        api.push_business_message(CONNECTION, FRIEND, FRIEND, "lunch?", message_id=1001, date=now)
        api.push_business_message(CONNECTION, FRIEND, ADMIN, "sure", message_id=1002, date=now)
        api.push_edited_business_message(CONNECTION, FRIEND, ADMIN, 1002, "sure, at 1")
        await api.wait_for(lambda a: len(owners_chat(runtime)) == 2)
        await api.settle(0.5)
        assert owners_chat(runtime)[-1] == ("owner", "sure, at 1")
    with open_store(config.store_path) as store:
        live = [(m.message_id, m.sender_id, m.text) for m in store.messages_of(FRIEND)]
        assert live == [(1001, FRIEND, "lunch?"), (1002, ADMIN, "sure, at 1")]
        assert store.owner() is not None and store.owner().user_id == ADMIN  # type: ignore[union-attr]
        # A later export of the same chat holds the same messages: nothing is added twice.
        stamp = {"date": "2026-12-07T12:00:00", "date_unixtime": str(now)}
        exported = [
            {
                "id": 1000,
                "type": "message",
                **stamp,
                "from": "Ann",
                "from_id": f"user{FRIEND}",
                "text": "hi",
            },
            {
                "id": 1001,
                "type": "message",
                **stamp,
                "from": "Ann",
                "from_id": f"user{FRIEND}",
                "text": "lunch?",
            },
            {
                "id": 1002,
                "type": "message",
                **stamp,
                "from": "Owner",
                "from_id": f"user{ADMIN}",
                "text": "sure, at 1",
            },
        ]
        summary = import_export(
            export_with(tmp_path / "result.json", exported), store, progress=False
        )
        assert summary.added == 1
        assert [m.message_id for m in store.messages_of(FRIEND)] == [1000, 1001, 1002]


@pytest.mark.anyio
async def test_nothing_is_learned_when_learn_is_off(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api, learn=False)
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api)
        pressed(api, notice, "send")
        await api.wait_for(lambda a: a.business_texts() != [])
    if config.store_path.exists():
        with open_store(config.store_path) as store:
            assert store.count_messages() == 0


@pytest.mark.anyio
async def test_what_the_owner_says_live_is_recalled_in_that_chat_only(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    """Live history goes into memory without a retrain, and scope "chat" holds: what the
    owner told Ann is recalled when Ann asks, not when Bob does."""
    config = bot_config(tmp_path, tiny_base, api.url, business={"takeover_minutes": 0.0})
    remember(
        config,
        {
            FRIEND: ("Ann", "personal_chat", ["see you at the station"]),
            8: ("Bob", "personal_chat", ["the report is due monday"]),
        },
    )
    async with serving(config) as runtime:
        api.push_business_connection(CONNECTION, OWNER_ID)
        await api.wait_for(lambda a: runtime.business.connection(CONNECTION) is not None)
        two_days_ago = int(time.time()) - 2 * 86400  # an earlier conversation
        api.push_business_message(
            CONNECTION, FRIEND, OWNER_ID, "my new bike is mint green", date=two_days_ago
        )
        await api.wait_for(
            lambda a: stored_texts(config, FRIEND)[-1:] == ["my new bike is mint green"]
        )
        question = "what colour is your new bike?"
        api.push_business_message(CONNECTION, FRIEND, FRIEND, question)
        api.push_business_message(CONNECTION, 8, 8, question, first_name="Bob")
        ann, bob = Where(FRIEND, 0, OWNER_ID), Where(8, 0, OWNER_ID)
        await api.wait_for(lambda a: {ann, bob} <= set(runtime.worker.last_recall), timeout=120)
        assert "mint green" in runtime.worker.last_recall[ann].block
        assert "mint green" not in runtime.worker.last_recall[bob].block


@pytest.mark.anyio
async def test_a_chat_excluded_from_ingest_is_not_kept_live(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        ingest={"exclude_chats": ["Bob"]},
        business={"mode": "off"},
        memory={"enabled": False},
    )
    async with serving(config) as runtime:
        await connected(api, runtime)
        api.push_business_message(CONNECTION, 8, 8, "private stuff", first_name="Bob")
        api.push_business_message(CONNECTION, FRIEND, FRIEND, "hi", first_name="Ann")
        await api.wait_for(lambda a: config.store_path.exists() and stored_texts(config, FRIEND))
        await api.settle(0.5)
        assert stored_texts(config, 8) == []
        # ...and the twin still reads it as the conversation it answers in.
        assert runtime.chat_log.recent(Where(8, 0, ADMIN))[0].text == "private stuff"


@pytest.mark.anyio
async def test_a_connection_made_while_the_bot_was_off_is_asked_of_telegram(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    api.add_business_connection(CONNECTION, ADMIN)  # connected before `twin serve` started
    async with serving(config) as runtime:
        await a_draft(api)
        await a_draft(api, "and another thing")
        asked = api.sent("getBusinessConnection")
        assert [c.params["business_connection_id"] for c in asked] == [CONNECTION]  # once
        assert runtime.business.owner_connection(ADMIN) is not None


@pytest.mark.anyio
async def test_the_next_retrain_learns_from_the_live_history(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    """No export at all: what the owner wrote in connected chats is a dataset already."""
    config = business_config(tmp_path, tiny_base, api, mode="off")
    async with serving(config) as runtime:
        await connected(api, runtime)
        api.push_business_message(CONNECTION, FRIEND, FRIEND, "did you book the table?")
        api.push_business_message(CONNECTION, FRIEND, ADMIN, "yes, 8pm at Luigi's")
        await api.wait_for(
            lambda a: config.store_path.exists() and len(stored_texts(config, FRIEND)) == 2
        )
    with open_store(config.store_path) as store:
        summary = build_dataset(config, store, progress=False)
    assert summary.train + summary.eval >= 1
    examples = [
        json.loads(line)["messages"]
        for name in ("train.jsonl", "eval.jsonl")
        for line in (config.dataset_dir / name).read_text().splitlines()
    ]
    assert [m["content"] for m in examples[0] if m["role"] != "system"] == [
        "did you book the table?",
        "yes, 8pm at Luigi's",
    ]


@pytest.mark.anyio
async def test_a_reply_that_fails_halfway_is_never_sent_again(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    """Sent at most once, even when Telegram refuses its second line: the first already
    reached the friend, so a second Send would repeat it."""
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        bot={"line_pause_per_char": 0.1, "max_line_pause": 1.0},
        memory={"enabled": False},
    )
    async with serving(config) as runtime:
        await connected(api, runtime)
        notice = await a_draft(api)
        api.push_message(
            ADMIN, "yes!\nsee you at 8", first_name="Owner", reply_to_message=notice.result
        )
        await api.wait_for(lambda a: a.business_texts() == ["yes!"])
        api.fail("sendMessage", 400)  # Telegram refuses the next line
        await api.wait_for(lambda a: a.texts(ADMIN)[-1].startswith("Only partly sent"))
        pressed(api, notice, "send")
        await api.wait_for(lambda a: callback_answers(a) != [])
        assert callback_answers(api)[-1]["text"] == "Already handled."
        assert api.business_texts() == ["yes!"]
        assert owners_chat(runtime)[-1] == ("owner", "yes!")  # what the friend did read
        assert runtime.business.correction_counts()["edited"] == 1
