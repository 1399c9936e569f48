"""A friend's voice message to the twin: fetched through the Bot API stand-in (getFile, then
the file download at api_base_url), transcribed off the event loop, answered as text, and
kept as what was said, in the bot's own chats and in the owner's (Telegram Business)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.store import open_store
from tests.bot.botapi import TOKEN, BotApiStandIn
from tests.bot.helpers import bot_config, said, serving
from tests.bot.test_business import CONNECTION, FRIEND, business_config, connected, owners_chat
from tests.helpers import VOICE

SPEECH = (VOICE / "see-you-on-monday.en.ogg").read_bytes()  # 3.7 s: "See you on Monday at 6..."


@pytest.mark.anyio
async def test_a_voice_message_is_heard_and_answered(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    async with serving(config) as runtime:
        api.push_message(1, None, voice={**api.add_file(SPEECH), "duration": 4})
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1, timeout=60)
        (speaker, text), *_ = said(runtime, 1)
        assert speaker == "1" and text.startswith("[voice message] ")
        assert "monday" in text.lower()
    # The sound came through the Bot API: getFile, then the file at its file_path.
    (fetch,) = [c for c in api.calls if c.method == "getFile"]
    (download,) = [c for c in api.calls if c.method == "download"]
    assert download.params["file_path"] == f"voice/{fetch.params['file_id']}.oga"
    assert download.status == 200 and TOKEN not in text


@pytest.mark.anyio
async def test_what_cannot_be_heard_is_answered_as_the_placeholder(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url, voice={"max_seconds": 60})
    async with serving(config) as runtime:
        # Too long: not even fetched. A download that fails. A damaged sound.
        api.push_message(1, None, voice={**api.add_file(SPEECH), "duration": 61})
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1, timeout=60)
        api.fail("download", 500)
        api.push_message(2, None, voice={**api.add_file(SPEECH), "duration": 4})
        await api.wait_for(lambda a: len(a.sent(chat_id=2)) >= 1, timeout=60)
        api.push_message(3, None, voice={**api.add_file(b"OggS" + bytes(99)), "duration": 4})
        await api.wait_for(lambda a: len(a.sent(chat_id=3)) >= 1, timeout=60)
        for chat in (1, 2, 3):
            assert said(runtime, chat)[0] == (str(chat), "[voice message]")
    assert [c.status for c in api.calls if c.method == "download"] == [500, 200]
    assert len([c for c in api.calls if c.method == "getFile"]) == 2


@pytest.mark.anyio
async def test_a_friends_voice_in_the_owners_chat_is_kept_as_words(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = business_config(tmp_path, tiny_base, api)
    async with serving(config) as runtime:
        await connected(api, runtime)
        voice = {**api.add_file(SPEECH), "duration": 4}
        api.push_business_message(CONNECTION, FRIEND, FRIEND, None, voice=voice)
        await api.wait_for(lambda a: owners_chat(runtime) != [], timeout=60)
        ((speaker, text),) = owners_chat(runtime)
        assert speaker == str(FRIEND) and text.startswith("[voice message] ")
        await runtime.live_history.flush()
    with open_store(config.store_path) as store:
        (kept,) = store.messages_of(FRIEND)
    assert kept.spoken and kept.media_type == "voice_message" and "monday" in kept.text.lower()
