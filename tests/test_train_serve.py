"""Trained as served: the same messages through the dataset (training) and through the bot
(serving) give, before each of the owner's replies, the very same prompt, token for token,
memory block included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.chat_log import Where
from ingest.dataset import build_dataset
from ingest.recall import open_recall
from ingest.store import Chat, Message, Owner, Store
from serving.twin import prompt_budget, remembering
from tests.bot.botapi import BotApiStandIn
from tests.bot.helpers import bot_config, serving
from trainer.generation import generate_replies
from twin.core.chat_format import encode_prompt, fit_prompt
from twin.core.conversation import OWNER, ChatMessage, Said, block_of

T0 = 1_800_000_000
OWNER_ID = 42
NAMES = {2: "Boris", 3: "Vera", 4: "Vera"}  # two members with one name: two speakers
PHOTO = [{"file_id": "p", "file_unique_id": "p", "width": 9, "height": 9}]
STICKER = {
    "file_id": "s",
    "file_unique_id": "s",
    "width": 512,
    "height": 512,
    "is_animated": False,
    "is_video": False,
    "type": "regular",
}
DAY = 24 * 60
# (minute, sender, text or a media kind): bursts, a reply after the merge gap, media, a
# three-day silence that starts a new conversation, and several speakers in a group.
SCRIPT: list[tuple[float, int, str]] = [
    (0, 2, "anyone climbing tomorrow?"),
    (0.5, 2, "photo"),
    (1, OWNER_ID, "me!!"),
    (1.1, OWNER_ID, "what time"),
    (3, 3, "7pm?"),
    (20, OWNER_ID, "ok ok, meet at millstone edge car park"),
    (3 * DAY, 4, "new week, new plans"),
    (3 * DAY + 1, 3, "sticker"),
    (3 * DAY + 2, 2, "which crag was that last time?"),
    (3 * DAY + 3, OWNER_ID, "millstone"),
    (3 * DAY + 3.05, OWNER_ID, "obviously"),
    (3 * DAY + 10, 2, "great"),
    (3 * DAY + 12, OWNER_ID, "see u there"),
]
# The group as the Bot API numbers it (a supergroup: -100 and its id); the store keys it so too.
BOT_GROUP = -1001823456789
STORE_GROUP = BOT_GROUP
MEDIA = {"photo": "photo", "sticker": "sticker"}


def stored(store: Store) -> None:
    """The script as the store holds a Telegram export of the group."""
    rows = []
    for n, (minute, sender, text) in enumerate(SCRIPT, start=1):
        media = MEDIA.get(text)
        rows.append(
            Message(
                chat_id=STORE_GROUP,
                message_id=n,
                date=T0 + int(minute * 60),
                sender_id=sender,
                sender_name="Olga" if sender == OWNER_ID else NAMES[sender],
                kind="message",
                media_type=media,
                text="" if media else text,
            )
        )
    with store.transaction():
        store.save_chat(Chat(STORE_GROUP, "climbing", "private_supergroup"))
        store.add_messages(rows)
        store.set_owner(Owner(OWNER_ID, "Olga"))


def trained_prompts(examples: list[list[ChatMessage]], tokenizer: object) -> dict[str, list[int]]:
    """Each trained reply's text -> the tokens of the prompt it is trained after."""
    out = {}
    for example in examples:
        for i, message in enumerate(example):
            if message["role"] == "assistant" and message.get("weight", 1):
                out[message["content"]] = encode_prompt(tokenizer, example[:i])  # type: ignore[arg-type]
    return out


@pytest.mark.anyio
async def test_the_prompt_before_each_reply_is_the_trained_one(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, store: Store
) -> None:
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        telegram={"allowed_chats": [BOT_GROUP]},
        dataset={"eval_fraction": 0.0, "max_tokens": 4096},
        train={"max_seq_tokens": 4096},
    )
    # Training: the store (as an export would fill it) -> the memory index and the dataset.
    stored(store)
    summary = build_dataset(config, store)
    assert summary.train == 4  # with memory, one example per reply
    examples = [
        json.loads(line)["messages"]
        for line in (config.dataset_dir / "train.jsonl").read_text().splitlines()
    ]
    # The bot reads the same memory index (the worker opens it on its model thread; here it is
    # opened on this one, and the worker's own function builds each prompt with it).
    with open_recall(config, store, update=False) as memory:
        async with serving(config) as runtime:
            tokenizer = runtime.worker._engine.tokenizer  # type: ignore[union-attr]
            trained = trained_prompts(examples, tokenizer)
            assert len(trained) == 4
            replay = Replay(runtime, memory, tokenizer, config)
            # Serving: the same messages reach the bot over the Bot API (nobody addresses the
            # bot: it reads them as context); after each reply it remembers what it sent.
            for minute, sender, text in SCRIPT:
                if sender == OWNER_ID:
                    replay.pending.append((minute, text))
                    continue
                replay.flush()  # the owner's burst just ended: the prompt it came after
                fields: dict[str, object] = {}
                if text in MEDIA:
                    fields[text] = PHOTO if text == "photo" else {**STICKER, "emoji": "😀"}
                api.push_message(
                    sender,
                    None if fields else text,
                    chat_id=BOT_GROUP,
                    chat_type="supergroup",
                    first_name=NAMES[sender],
                    date=T0 + int(minute * 60),
                    **fields,
                )
                count = len(runtime.chat_log.recent(WHERE)) + 1
                await api.wait_for(lambda a, n=count: len(runtime.chat_log.recent(WHERE)) == n)
            replay.flush()
    assert set(replay.served) == set(trained)
    for reply, tokens in trained.items():
        assert replay.served[reply] == tokens, reply
    # The reply about the crag was trained (and is served) with what was said of it before.
    crag = next(e for e in examples if e[-1]["content"] == "millstone\nobviously")
    assert "millstone edge car park" in block_of(crag)


WHERE = Where(BOT_GROUP)


class Replay:
    """The bot's side of the script: the prompt before each burst of the owner's, built by
    the worker's own functions, then the burst remembered as the bot remembers its replies."""

    def __init__(self, runtime, memory, tokenizer, config) -> None:  # type: ignore[no-untyped-def]
        self.runtime, self.memory, self.tokenizer, self.config = runtime, memory, tokenizer, config
        self.pending: list[tuple[float, str]] = []
        self.served: dict[str, list[int]] = {}

    def flush(self) -> None:
        if not self.pending:
            return
        prompt = self.runtime.worker.prompt_for(WHERE, group=True)
        conversation, _ = remembering(self.memory, prompt, chat=STORE_GROUP)
        fitted = fit_prompt(self.tokenizer, conversation, prompt_budget(self.config))
        self.served["\n".join(t for _, t in self.pending)] = encode_prompt(self.tokenizer, fitted)
        for minute, text in self.pending:
            self.runtime.chat_log.remember(WHERE, Said(OWNER, "", text, T0 + int(minute * 60)))
        self.pending.clear()


def test_generation_renders_the_prompt_it_is_given(tiny_base: Path, tmp_path: Path) -> None:
    """What generate_replies feeds the model is exactly encode_prompt of the conversation."""
    from trainer.model import load_base
    from twin.core.config import config_from_dict

    base = load_base(config_from_dict({"model": {"base": str(tiny_base)}}))
    conversation: list[ChatMessage] = [
        {"role": "system", "content": "You are Olga."},
        {"role": "user", "content": "Boris: who's in?"},
    ]
    seen: list[list[int]] = []
    real = base.model.generate

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["input_ids"][0].tolist())
        return real(**kwargs)

    base.model.generate = spy
    generation = config_from_dict({}).generation.model_copy(update={"max_new_tokens": 2})
    generate_replies(base.model, base.tokenizer, [conversation], generation)
    assert seen == [encode_prompt(base.tokenizer, conversation)]
