"""/persona: every admin subcommand, through the real bot and the Bot API stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bot.botapi import BotApiStandIn
from tests.bot.helpers import (
    ADMIN,
    FRIENDS,
    bot_config,
    copy_adapters,
    retrain_config,
    serving,
    turns,
)
from trainer import registry
from twin.core.loading import load_config


async def ask(api: BotApiStandIn, text: str, timeout: float = 30.0) -> str:
    """Send /persona ... as the admin and return the bot's answer."""
    seen = len(api.texts(ADMIN))
    api.push_message(ADMIN, text, first_name="Owner")
    await api.wait_for(lambda a: len(a.texts(ADMIN)) > seen, timeout)
    return api.texts(ADMIN)[seen]


@pytest.mark.anyio
async def test_admin_subcommands(
    tmp_path: Path, tiny_base: Path, trained_adapters: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    first, second = copy_adapters(trained_adapters, config)
    async with serving(config) as runtime:
        assert "rollback" in await ask(api, "/persona")
        assert "sample TEXT" in await ask(api, "/persona help")
        assert "Unknown subcommand 'frob'" in await ask(api, "/persona frob")

        status = await ask(api, "/persona status")
        assert f"Serving: adapter {first}" in status
        assert "Held-out loss: " in status and "(base " in status
        assert "Data: 0 examples from 0 messages" in status  # adapters only, no data here
        assert "Replying: on" in status and "Next retrain: not scheduled" in status
        assert "Memory guidance: 2 (replies lean on what the memory block" in status

        listing = await ask(api, "/persona list")
        assert listing.splitlines()[0].startswith(second)
        assert f"{first} current" in listing

        assert await ask(api, f"/persona use {second}") == f"Now serving adapter {second}."
        assert registry.current_version(config.adapters_dir) == second
        assert runtime.worker.version == second
        assert "no adapter 2000" in await ask(api, "/persona use 20000101-000000")
        assert await ask(api, "/persona rollback") == f"Now serving adapter {first}."
        assert registry.current_version(config.adapters_dir) == first
        assert "no earlier adapter" in await ask(api, "/persona rollback")

        assert "Paused" in await ask(api, "/persona pause")
        api.push_message(1, "hello? anyone?")
        await api.settle(1.0)
        assert api.sent(chat_id=1) == []
        assert "Replying: paused" in await ask(api, "/persona status")
        assert "Resumed" in await ask(api, "/persona resume")
        api.push_message(1, "now?")
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1)
        # What was said while paused stayed in the chat log.
        assert turns(runtime, 1)[0]["content"] == "hello? anyone?\nnow?"

        assert await ask(api, "/persona set temperature 0.5") == "temperature = 0.5 (saved)"
        assert runtime.worker.config.generation.temperature == 0.5
        assert "(saved)" in await ask(api, "/persona set memory_guidance 0")
        assert "Memory guidance: off ([generation] memory_guidance = 0)" in await ask(
            api, "/persona status"
        )
        assert "must be a number" in await ask(api, "/persona set temperature hot")
        assert "top_p must be <= 1.0, got 2.0" in await ask(api, "/persona set top_p 2")
        # Nothing that would freeze or silence the bot gets in (nor into settings.json).
        for refused, why in [
            ("repetition_penalty nan", "must be a finite number"),
            ("temperature inf", "must be a finite number"),
            ("line_pause_per_char inf", "must be a finite number"),
            ("max_new_tokens 1000000000", "max_new_tokens must be <= 4096"),
            ("max_new_tokens 1000", "leaves 24 tokens"),
        ]:
            assert why in await ask(api, f"/persona set {refused}")
        assert runtime.worker.config.generation.max_new_tokens == 8  # as configured
        long_prompt = "You are {name}. " + "Always answer in a friendly way. " * 120
        assert "leaves" in await ask(api, f"/persona prompt {long_prompt}")
        assert runtime.worker.system_prompt.startswith("You are the owner. Reply")
        assert "cannot be set" in await ask(api, "/persona set base gpt2")
        assert "Usage" in await ask(api, "/persona set max_new_tokens")
        assert "(saved)" in await ask(api, "/persona set line_pause_per_char 0")

        answer = await ask(api, "/persona prompt You are {name}. Short answers,\nno emoji.")
        assert "the next retrain trains with this one" in answer
        assert runtime.worker.system_prompt == "You are the owner. Short answers,\nno emoji."

        others = len(api.sent())
        sample = await ask(api, "/persona sample are you coming tonight?")
        assert sample.startswith("The twin would answer:")
        assert len(api.sent()) == others + 1  # only the admin got it
        assert runtime.worker.stats.replies >= 2
    # The settings persist: every later command (the next retrain too) reads them.
    saved = json.loads(config.overrides_path.read_text())
    assert saved["generation"]["temperature"] == 0.5
    reloaded = load_config(config.source)
    assert reloaded.generation.temperature == 0.5
    assert reloaded.persona.system_prompt == "You are {name}. Short answers,\nno emoji."


@pytest.mark.anyio
async def test_persona_train_retrains_in_the_background_and_reports(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    # The fidelity eval on: /persona report sends its charts.
    config = retrain_config(tmp_path, tiny_base, api.url, eval={"on_train": True})
    async with serving(config) as runtime:
        assert runtime.worker.version is None  # nothing trained yet: the base serves
        assert "Retrain started" in await ask(api, "/persona train")
        assert "already running" in await ask(api, "/persona train")
        api.push_message(1, "you there while it trains?")  # serving goes on
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1)
        await api.wait_for(lambda a: len(a.sent("sendPhoto", chat_id=ADMIN)) == 1, 240)
        report = api.sent("sendPhoto", chat_id=ADMIN)[0]
        version = registry.current_version(config.adapters_dir)
        assert version is not None
        caption = report.params["caption"]
        assert caption.startswith(f"Retrain: adapter {version} promoted, now serving.")
        assert "New messages: 747" in caption and "Held-out loss: base " in caption
        assert "\nPreference stage: " in caption  # what the stage did, kept or not
        assert report.files["photo"].startswith(b"\x89PNG\r\n\x1a\n")
        assert runtime.worker.version == version
        # /persona report: the same chart and numbers for the adapter in use
        seen = len(api.sent("sendPhoto", chat_id=ADMIN))
        api.push_message(ADMIN, "/persona report")
        # the loss chart with the numbers, then the fidelity report's two charts
        await api.wait_for(lambda a: len(a.sent("sendPhoto", chat_id=ADMIN)) == seen + 3)
        charts = api.sent("sendPhoto", chat_id=ADMIN)[seen:]
        assert charts[0].params["caption"].startswith(f"Adapter {version} (current)")
        assert "style distance (0 = yours)" in charts[0].params["caption"]
        assert all(c.files["photo"].startswith(b"\x89PNG") for c in charts)


@pytest.mark.anyio
async def test_failed_retrain_is_reported(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = retrain_config(tmp_path, tiny_base, api.url, exports=["missing/result.json"])
    async with serving(config) as runtime:
        await ask(api, "/persona train")
        report = await ask_later(api, "Retrain failed", timeout=120)
        assert "missing/result.json" in report
        assert "No adapter in use yet" in await ask(api, "/persona report")
        assert runtime.worker.version is None


async def ask_later(api: BotApiStandIn, start: str, timeout: float) -> str:
    await api.wait_for(lambda a: any(t.startswith(start) for t in a.texts(ADMIN)), timeout)
    return next(t for t in api.texts(ADMIN) if t.startswith(start))


@pytest.mark.anyio
async def test_profile_facts_and_what_a_reply_recalled(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    from ingest.export import import_export
    from ingest.recall import update_memory
    from ingest.store import open_store
    from twin.app.demo import demo_export_path

    config = bot_config(tmp_path, tiny_base, api.url)
    with open_store(config.store_path) as store:
        import_export(demo_export_path(), store, progress=False)
        update_memory(config, store, progress=False)
    async with serving(config):
        listing = await ask(api, "/persona facts")
        assert "No profile facts yet." in listing and "i'm vegetarian" in listing
        assert "Shared with every chat" in await ask(api, "/persona fact add i'm vegetarian")
        assert "1. i'm vegetarian" in await ask(api, "/persona facts")
        assert "No reply in chat 1" in await ask(api, "/persona memory 1")
        api.push_message(1, "hey, dinner at mine on friday?")
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1)
        recalled = await ask(api, "/persona memory 1")
        assert "About you:" in recalled and "i'm vegetarian" in recalled
        api.push_message(2, "/persona memory 1")  # a friend, not an admin: nothing
        await api.settle()
        assert api.sent(chat_id=2) == []
        assert "Forgotten: i'm vegetarian" in await ask(api, "/persona fact forget 1")
        assert "Usage" in await ask(api, "/persona fact forget me")


@pytest.mark.anyio
async def test_persona_memory_shows_the_latest_reply_in_a_forum_chat(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    from bot.chat_log import Where
    from tests.bot.helpers import GROUP
    from tests.bot.test_recall import remember

    config = bot_config(tmp_path, tiny_base, api.url)
    remember(
        config,
        {
            GROUP: (
                "Group",
                "private_supergroup",
                [
                    "my new bike is mint green",
                    "i take oat milk in my flat white",
                    "our cat is pixel",
                ],
            )
        },
    )
    topic = {"chat_id": GROUP, "chat_type": "supergroup", "is_topic_message": True}
    mention = [{"type": "mention", "offset": 0, "length": 14}]
    async with serving(config) as runtime:

        async def asked(user: int, text: str, thread: int) -> None:
            replies = runtime.worker.stats.replies
            api.push_message(
                user, f"@twin_test_bot {text}", **topic, message_thread_id=thread, entities=mention
            )
            await api.wait_for(lambda a: runtime.worker.stats.replies > replies)

        await asked(1, "what colour is your bike?", 11)
        await asked(2, "how do you take your coffee?", 22)
        await asked(1, "and what is your cat called?", 11)  # topic 11 again: the latest reply
        recalled = runtime.worker.last_recall
        latest = recalled[Where(GROUP, 11)].block
        assert latest != recalled[Where(GROUP, 22)].block
        assert await ask(api, f"/persona memory {GROUP}") == latest


@pytest.mark.anyio
async def test_persona_facts_mines_off_the_loop_from_the_used_chats_once(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mining a large store takes a while: the bot answers everyone meanwhile, mines only the
    chats the twin may use (not an excluded chat, not Saved Messages), and mines again only
    when the store changed."""
    import threading

    from ingest import profile as memory_module
    from ingest.store import Message, open_store
    from tests.bot.test_recall import OWNER_ID, T0, remember

    config = bot_config(tmp_path, tiny_base, api.url, ingest={"exclude_chats": ["Secret Club"]})
    remember(
        config,
        {
            1: ("Ann", "personal_chat", ["oh nice! i live in leeds now lol"]),
            -4001: ("Secret Club", "private_group", ["i work at the bakery"]),
            OWNER_ID: ("Saved Messages", "saved_messages", ["i'm vegetarian btw"]),
        },
    )
    with open_store(config.store_path) as store, store.transaction():
        filler = (
            Message(1, n, T0 + n, OWNER_ID, "Mira", "message", None, "ok")
            for n in range(10, 60_010)
        )
        store.add_messages(filler)  # a long history: 60,000 messages to read through
    release = threading.Event()
    mined: list[str] = []
    mine = memory_module.mine_profile_candidates

    def held(*args: object, **kwargs: object) -> list[str]:
        mined.append(threading.current_thread().name)
        release.wait(30)  # mining that takes long (bounded: a bug must not hang the test)
        return mine(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(memory_module, "mine_profile_candidates", held)
    async with serving(config):
        seen = len(api.texts(ADMIN))
        api.push_message(ADMIN, "/persona facts", first_name="Owner")
        await api.wait_for(lambda a: len(mined) == 1)
        api.push_message(1, "hey, you there?")  # answered while the facts are mined
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1, 60)
        assert len(api.texts(ADMIN)) == seen  # the listing is still being mined
        release.set()
        await api.wait_for(lambda a: len(a.texts(ADMIN)) > seen, 60)
        listing = api.texts(ADMIN)[seen]
        assert "i live in leeds now" in listing
        assert "bakery" not in listing  # an excluded chat's
        assert "vegetarian" not in listing  # Saved Messages'
        # Asked again with nothing changed: the same listing, not mined again.
        assert await ask(api, "/persona facts") == listing
        assert len(mined) == 1
        with open_store(config.store_path) as store, store.transaction():
            said = "у меня кошка муся"
            store.add_messages(
                [Message(1, 70_000, T0 + 70_000, OWNER_ID, "Mira", "message", None, said)]
            )
        assert "у меня кошка муся" in await ask(api, "/persona facts")  # the store changed
        assert len(mined) == 2


@pytest.mark.anyio
async def test_a_sample_rated_once_becomes_a_masked_correction(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url, memory={"enabled": False})
    async with serving(config) as runtime:
        await ask(api, "/persona sample call me at +1 202 555 0143 tonight?")
        shown = [c for c in api.sent(chat_id=ADMIN) if "reply_markup" in c.params][-1]
        message_id = shown.result["message_id"]
        buttons = dict(api.buttons(ADMIN, message_id))
        assert set(buttons) == {"👍", "👎"}
        for user, button in ((FRIENDS[0], "👍"), (ADMIN, "👎"), (ADMIN, "👍")):
            pressed = len(api.sent("answerCallbackQuery"))
            api.push_callback(user, ADMIN, message_id, buttons[button])
            await api.wait_for(lambda a, n=pressed: len(a.sent("answerCallbackQuery")) > n)
        answers = sorted(c.params["text"] for c in api.sent("answerCallbackQuery"))
        assert answers == [
            "Already rated.",
            "Kept for the next retrain's preference stage.",
            "Only admins rate samples.",
        ]
        counts = runtime.business.correction_counts()
        assert (counts["disliked"], counts["liked"], counts["total"]) == (1, 0, 1)
        turns = runtime.chat_log.conn.execute("SELECT turns FROM corrections").fetchone()[0]
        assert "0143" not in turns and "tonight" in turns  # masked like the dataset
        assert api.message_text(ADMIN, message_id).endswith("👎")
