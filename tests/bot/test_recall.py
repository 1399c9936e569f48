"""What a reply recalls, in the bot: searched for the end of what it answers, and a memory
block that fits the prompt by the served tokenizer's count, whatever the script."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.chat_log import Where
from ingest.memory import MemoryIndex
from tests.bot.botapi import BotApiStandIn
from tests.bot.helpers import bot_config, serving
from twin.core.config import Config
from twin.core.conversation import Remembered

OWNER_ID = 500
T0 = 1_700_000_000  # when the owner said what the store holds (2023: older than any chat now)


def remember(config: Config, chats: dict[int, tuple[str, str, list[str]]]) -> None:
    """A store in which the owner (Mira) said `texts` in each chat (id -> name, type, texts),
    as Bot API ids, and its memory index."""
    from ingest.recall import update_memory
    from ingest.store import Chat, Message, Owner, open_store

    with open_store(config.store_path) as store:
        with store.transaction():
            store.set_owner(Owner(OWNER_ID, "Mira"))
            for chat_id, (name, kind, texts) in chats.items():
                store.save_chat(Chat(chat_id, name, kind))
                store.add_messages(
                    Message(chat_id, n, T0 + 60 * n, OWNER_ID, "Mira", "message", None, text)
                    for n, text in enumerate(texts, start=1)
                )
        update_memory(config, store, progress=False)


@pytest.mark.anyio
async def test_memory_is_searched_for_the_end_of_a_long_burst(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst can be 20 messages of 4096 characters: masking and embedding all of it on the
    model thread would hold every chat up, and the words nearest the reply say what it is about."""
    config = bot_config(tmp_path, tiny_base, api.url)
    remember(
        config, {1: ("Ann", "personal_chat", ["my new bike is mint green", "oat milk please"])}
    )
    queries: list[str] = []
    search = MemoryIndex.search

    def searched(self: MemoryIndex, query: str, **kwargs: Any) -> Any:
        queries.append(query)
        return search(self, query, **kwargs)

    monkeypatch.setattr(MemoryIndex, "search", searched)
    question = "so, what colour is your bike?"
    async with serving(config) as runtime:
        for _ in range(19):
            api.push_message(1, "la " * 1365)  # 4095 characters
        api.push_message(1, "la " * 1355 + question)
        await api.wait_for(
            lambda a: runtime.worker.stats.replies >= 1 and not runtime.worker.queued
        )
        await api.settle()
        recall = runtime.worker.last_recall[Where(1, 0)]
    assert queries and all(len(q) <= 500 for q in queries)
    assert queries[-1].endswith(question)
    assert "my new bike is mint green" in [r.text for r in recall.found]


@pytest.mark.anyio
@pytest.mark.parametrize("script", ["🚲", "漢"])
async def test_a_memory_block_of_emoji_or_cjk_fits_by_the_served_tokenizer(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, script: str
) -> None:
    """3 characters a token holds for chat text in Latin or Cyrillic letters; an emoji or a CJK
    character takes one or more tokens each. Such a block, counted by the estimate, would
    take the whole prompt, and the chat would get no reply."""
    config = bot_config(tmp_path, tiny_base, api.url, bot={"context_tokens": 320})
    said = script * 200 + " my new bike is mint green"
    remember(config, {1: ("Ann", "personal_chat", [said])})
    async with serving(config) as runtime:
        api.push_message(1, "what colour is your bike?")
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1, 60)
        recall = runtime.worker.last_recall[Where(1, 0)]
    assert [r.text for r in recall.found] == [said]  # recalled...
    assert script not in recall.block  # ...but it does not fit [memory] max_tokens: left out


@pytest.mark.anyio
async def test_a_block_the_prompt_has_room_for_is_the_one_training_built(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    """Trained as served: the dataset builds blocks by the estimate (it has no tokenizer). This
    Russian block takes SmolLM2's tokenizer about 2.3 times the estimate's tokens, yet the
    prompt has room for it and a message: it is served as training built it, not cut."""
    config = bot_config(tmp_path, tiny_base, api.url)
    said = [
        "кста я фикус купила, назвала его борисом, он стоит у окна на кухне и растёт как "
        "сумасшедший, уже два новых листа за неделю, представляешь",
        "мой велик мятного цвета, купила его весной, катаюсь на нём на работу каждый день "
        "если нет дождя, а в дождь на трамвае",
        "ну давай в субботу тогда, я до обеда на работе, потом свободна весь день и вечер",
    ]
    remember(config, {1: ("Аня", "personal_chat", said)})
    async with serving(config) as runtime:
        api.push_message(1, "какого цвета твой велик? и как там фикус?")
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1, 60)
        recall = runtime.worker.last_recall[Where(1, 0)]
        recaller = runtime.worker._recall
        tokenizer = runtime.worker._engine.tokenizer  # type: ignore[union-attr]
    assert recaller is not None
    trained = recaller.block([Remembered(r.text, r.answered) for r in recall.found], [])
    assert recall.block == trained
    lines = trained.splitlines()[1:]  # the recalled lines, without the header
    assert len(lines) == len(said)
    assert sum(len(tokenizer(line + "\n")["input_ids"]) for line in lines) > 160
