"""The dialog dataset rules, each on a small hand-built store (real SQLite) or a real export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.dataset import build_dataset, count_examples
from ingest.export import import_export
from ingest.store import Chat, Message, Owner, Store
from twin.core.config import Config, config_from_dict
from twin.core.conversation import block_of

OWNER = 1
T0 = 1_700_000_000


def msg(chat: int, mid: int, minute: float, sender: int, text: str = "", **kw: object) -> Message:
    names = {OWNER: "Olga", 2: "Boris", 3: "Vera", 4: "Gleb"}
    return Message(
        chat_id=chat,
        message_id=mid,
        date=T0 + int(minute * 60),
        sender_id=sender,
        sender_name=names.get(sender, "X"),
        kind=str(kw.pop("kind", "message")),
        media_type=kw.pop("media_type", None),
        text=text,
        **kw,  # type: ignore[arg-type]
    )


def fill(store: Store, chats: list[Chat], messages: list[Message]) -> None:
    with store.transaction():
        for chat in chats:
            store.save_chat(chat)
        store.add_messages(messages)
        store.set_owner(Owner(OWNER, "Olga", "+7 916 555-12-34"))


def config_for(tmp_path: Path, **dataset: object) -> Config:
    # Memory has tests of its own (below, and tests/ingest/test_memory.py): the rules here
    # are the dataset's (with memory each example ends at a single reply).
    raw: dict[str, object] = {
        "paths": {"data_dir": str(tmp_path / "data")},
        "memory": {"enabled": False},
    }
    if dataset:
        raw["dataset"] = dataset
    return config_from_dict(raw)


def examples(config: Config) -> list[list[dict[str, object]]]:
    rows = []
    for name in ("train.jsonl", "eval.jsonl"):
        text = (config.dataset_dir / name).read_text()
        rows += [json.loads(line)["messages"] for line in text.splitlines()]
    return rows


def without_system(example: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(m["role"], m["content"]) for m in example if m["role"] != "system"]


PERSONAL = Chat(10, "Boris", "personal_chat")


def test_roles_and_burst_merging(store: Store, tmp_path: Path) -> None:
    fill(
        store,
        [PERSONAL],
        [
            msg(10, 1, 0, 2, "hey"),
            msg(10, 2, 0.5, 2, "are you around?"),
            msg(10, 3, 1, OWNER, "yes"),
            msg(10, 4, 1.2, OWNER, "what's up"),
            msg(10, 5, 2, 2, "lunch?"),
            msg(10, 6, 13, OWNER, "sure"),  # 11 min after her last message: a new turn
            msg(10, 7, 25, OWNER, "12:30?"),  # 12 min after her own last message: another turn
        ],
    )
    config = config_for(tmp_path)
    build_dataset(config, store)
    (example,) = examples(config)
    assert example[0] == {
        "role": "system",
        "content": "You are Olga. Reply to this Telegram chat exactly as Olga would.",
    }
    assert without_system(example) == [
        ("user", "hey\nare you around?"),
        ("assistant", "yes\nwhat's up"),
        ("user", "lunch?"),
        ("assistant", "sure"),
        ("assistant", "12:30?"),
    ]


def test_forwards_service_and_media_are_never_assistant_turns(store: Store, tmp_path: Path) -> None:
    fill(
        store,
        [PERSONAL],
        [
            msg(10, 1, 0, 2, "", media_type="photo"),
            msg(10, 2, 1, OWNER, "look at this", forwarded_from="News Channel"),
            msg(10, 3, 1.1, OWNER, "", media_type="sticker"),
            msg(10, 4, 1.2, OWNER, "", kind="service"),
            msg(10, 5, 1.3, OWNER, "ha, nice cat"),
            msg(10, 6, 2, 2, "it's forwarded from a channel", forwarded_from="Cats"),
            msg(10, 7, 3, OWNER, "lol"),
        ],
    )
    config = config_for(tmp_path)
    build_dataset(config, store)
    (example,) = examples(config)
    assert without_system(example) == [
        ("user", "[photo]"),
        ("assistant", "ha, nice cat"),
        ("user", "it's forwarded from a channel"),
        ("assistant", "lol"),
    ]


def test_sessions_split_and_examples_start_with_user_end_with_owner(
    store: Store, tmp_path: Path
) -> None:
    fill(
        store,
        [PERSONAL],
        [
            msg(10, 1, 0, OWNER, "morning!"),  # an opener with nothing before it: not a reply
            msg(10, 2, 2, 2, "morning"),
            msg(10, 3, 3, OWNER, "coffee?"),
            msg(10, 4, 4, 2, "later"),  # trailing user turn: nothing to learn after it
            msg(10, 5, 200, 2, "back home?"),  # > 60 min silence: a new conversation
            msg(10, 6, 201, OWNER, "yep"),
        ],
    )
    config = config_for(tmp_path)
    summary = build_dataset(config, store)
    assert summary.conversations == 2
    got = sorted(without_system(e) for e in examples(config))
    assert got == [
        [("user", "back home?"), ("assistant", "yep")],
        [("user", "morning"), ("assistant", "coffee?")],
    ]


def test_group_prefixes_speakers_and_default_chat_types(store: Store, tmp_path: Path) -> None:
    chats = [
        Chat(20, "Climbing", "private_supergroup"),
        Chat(30, "SomeBot", "bot_chat"),
        Chat(40, "News", "public_channel"),
        Chat(50, "Saved Messages", "saved_messages"),
        Chat(60, "Quiet group", "private_group"),  # the owner never writes here
    ]
    messages = [
        msg(20, 1, 0, 2, "who's in on saturday?"),
        msg(20, 2, 1, 3, "me"),
        msg(20, 3, 2, OWNER, "me too"),
        msg(60, 1, 0, 2, "hello"),
        msg(60, 2, 1, 3, "hi"),
    ]
    for chat in (30, 40, 50):
        messages += [msg(chat, 1, 0, 2, "ping"), msg(chat, 2, 1, OWNER, "pong")]
    fill(store, chats, messages)
    config = config_for(tmp_path)
    summary = build_dataset(config, store)
    (example,) = examples(config)
    assert without_system(example) == [
        ("user", "Boris: who's in on saturday?"),
        ("user", "Vera: me"),
        ("assistant", "me too"),
    ]
    assert summary.skipped["bot_chat chats"] == 1
    assert summary.skipped["public_channel chats"] == 1
    assert summary.skipped["saved_messages chats"] == 1
    assert summary.chats_used == 1


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [([], ["Boris"], {"Vera"}), (["11"], [], {"Vera"}), (["boris", "VERA"], ["11"], {"Boris"})],
)
def test_include_exclude_chats_by_id_or_name(
    include: list[str], exclude: list[str], expected: set[str], store: Store, tmp_path: Path
) -> None:
    fill(
        store,
        [PERSONAL, Chat(11, "Vera", "personal_chat")],
        [
            msg(10, 1, 0, 2, "hi from boris"),
            msg(10, 2, 1, OWNER, "hi boris"),
            msg(11, 1, 0, 3, "hi from vera"),
            msg(11, 2, 1, OWNER, "hi vera"),
        ],
    )
    config = config_from_dict(
        {
            "paths": {"data_dir": str(tmp_path / "data")},
            "ingest": {"include_chats": include, "exclude_chats": exclude},
            "memory": {"enabled": False},
        }
    )
    build_dataset(config, store)
    replies = {without_system(e)[-1][1] for e in examples(config)}
    assert replies == {f"hi {name.lower()}" for name in expected}


def test_long_conversation_is_cut_with_context_and_each_reply_trained_once(
    store: Store, tmp_path: Path
) -> None:
    messages = []
    for i in range(40):  # 40 exchanges, 10 minutes apart: one conversation, 80 turns
        messages.append(msg(10, 2 * i + 1, 10 * i, 2, f"question number {i} " + "blah " * 10))
        messages.append(msg(10, 2 * i + 2, 10 * i + 1, OWNER, f"answer {i} " + "yada " * 10))
    fill(store, [PERSONAL], messages)
    config = config_for(tmp_path, max_tokens=200)
    build_dataset(config, store)
    rows = examples(config)
    assert len(rows) > 5
    trained = []
    for example in rows:
        turns = [m for m in example if m["role"] != "system"]
        assert turns[0]["role"] == "user" and turns[-1]["role"] == "assistant"
        chars = sum(len(str(m["content"])) for m in example)
        assert chars / 3 + 6 * len(example) <= 200
        trained += [m["content"] for m in turns if m["role"] == "assistant" and "weight" not in m]
        assert all(m.get("weight", 1) == 0 for m in turns if m["role"] == "user" and "weight" in m)
        # Later cuts keep context: they carry earlier replies as weight-0 turns.
    assert sorted(trained) == sorted(f"answer {i} " + "yada " * 9 + "yada" for i in range(40))
    assert any(m.get("weight") == 0 for e in rows for m in e)


def test_pii_never_reaches_the_dataset_and_ordinary_numbers_survive(
    store: Store, tmp_path: Path
) -> None:
    secrets = [
        "8 (916) 123-45-67",
        "+44 20 7946 0958",
        "anna.k@example.org",
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
        "+7 916 555-12-34",
    ]
    ordinary = ["2-3", "10:30", "12.05.2024", "1999", "$1500", "room 404"]
    fill(
        store,
        [PERSONAL],
        [
            msg(10, 1, 0, 2, f"call me at {secrets[0]} or {secrets[1]}, mail {secrets[2]}"),
            msg(10, 2, 1, OWNER, f"card {secrets[3]}, iban {secrets[4]}, my cell {secrets[5]}"),
            msg(10, 3, 2, 2, "see you " + ", ".join(ordinary)),
            msg(10, 4, 3, OWNER, "ok"),
        ],
    )
    config = config_for(tmp_path)
    summary = build_dataset(config, store)
    written = "".join(p.read_text() for p in config.dataset_dir.glob("*.jsonl"))
    for secret in secrets:
        assert secret not in written
        assert secret.replace(" ", "") not in written.replace(" ", "")
    for placeholder in ("<PHONE>", "<EMAIL>", "<CARD>", "<IBAN>"):
        assert placeholder in written
    for value in ordinary:
        assert value in written
    assert "my cell <PHONE>" in written  # the message is kept, only the value is masked
    assert summary.masked == 6


def test_duplicates_removed_and_split_is_deterministic_and_by_conversation(
    store: Store, tmp_path: Path
) -> None:
    messages = []
    for day in range(60):  # 60 conversations a day apart; every 10th repeats an earlier one
        base = day * 1440
        text = f"plans for day {day % 10 if day % 10 == 0 else day}?"
        messages += [
            msg(10, 3 * day + 1, base, 2, text),
            msg(10, 3 * day + 2, base + 1, OWNER, "hmm"),
            msg(10, 3 * day + 3, base + 2, OWNER, "maybe"),
        ]
    fill(store, [PERSONAL], messages)
    config = config_for(tmp_path, eval_fraction=0.1)
    first = build_dataset(config, store)
    train_1 = (config.dataset_dir / "train.jsonl").read_text()
    eval_1 = (config.dataset_dir / "eval.jsonl").read_text()
    assert first.skipped["duplicate examples"] == 5  # days 10, 20, ..., 50 repeat day 0
    assert first.train + first.eval == 55 == count_examples(config.dataset_dir)
    assert first.eval >= 5
    assert not set(train_1.splitlines()) & set(eval_1.splitlines())
    second = build_dataset(config, store)
    assert second.sha256 == first.sha256
    assert (config.dataset_dir / "eval.jsonl").read_text() == eval_1


def test_split_stays_put_when_new_conversations_arrive(store: Store, tmp_path: Path) -> None:
    def day(d: int) -> list[Message]:
        return [
            msg(10, 2 * d + 1, d * 1440, 2, f"how was day {d}?"),
            msg(10, 2 * d + 2, d * 1440 + 1, OWNER, f"day {d} was fine"),
        ]

    fill(store, [PERSONAL], [m for d in range(100) for m in day(d)])
    config = config_for(tmp_path, eval_fraction=0.1, eval_min_examples=0)
    build_dataset(config, store)
    eval_before = set((config.dataset_dir / "eval.jsonl").read_text().splitlines())
    with store.transaction():
        store.add_messages([m for d in range(100, 150) for m in day(d)])
    build_dataset(config, store)
    eval_after = set((config.dataset_dir / "eval.jsonl").read_text().splitlines())
    assert eval_before and eval_before <= eval_after


def test_real_export_to_dataset(exports: Path, store: Store, tmp_path: Path) -> None:
    import_export(exports / "chatstyle__result.json", store, progress=False)
    config = config_for(tmp_path, eval_min_examples=0)
    summary = build_dataset(config, store)
    assert summary.train + summary.eval == 1
    (example,) = examples(config)
    # She writes in Russian: the persona prompt's default is the Russian one.
    assert example[0]["content"] == (
        "Ты — Анна Петрова. Отвечай в этом чате Telegram так, как ответил бы Анна Петрова."
    )
    turns = without_system(example)
    # Борис opens, Анна answers in bursts; her forward and sticker are gone, the photo's
    # caption stays, the service message is not a turn.
    assert turns[0] == ("user", "Привет. Как дела?")
    assert turns[1] == (
        "assistant",
        "смотри https://example.com/a круто\nну реально норм, @boris_k глянь",
    )
    assert ("assistant", "короче вот фотка") in turns
    assert turns[-1] == ("assistant", "ладно))\nщас дойду")
    assert not any("переслано" in str(content) for _, content in turns)


def test_dataset_files_are_private(store: Store, tmp_path: Path) -> None:
    fill(store, [PERSONAL], [msg(10, 1, 0, 2, "hi"), msg(10, 2, 1, OWNER, "hey")])
    config = config_for(tmp_path)
    build_dataset(config, store)
    assert (config.dataset_dir.stat().st_mode & 0o777) == 0o700
    assert ((config.dataset_dir / "train.jsonl").stat().st_mode & 0o777) == 0o600


def test_with_memory_each_reply_is_trained_after_what_it_could_recall_then(
    store: Store, tmp_path: Path
) -> None:
    day = 24 * 60
    fill(
        store,
        [PERSONAL, Chat(11, "Vera", "personal_chat")],
        [
            msg(10, 1, 0, 2, "any news?"),
            msg(10, 2, 1, OWNER, "we got a kitten, her name is biscuit"),
            msg(11, 1, 1 * day, 3, "how is work?"),
            msg(11, 2, 1 * day + 1, OWNER, "secret project, codename larkspur, tell no one"),
            msg(10, 3, 3 * day, 2, "how's the new flatmate?"),
            msg(10, 4, 3 * day + 1, OWNER, "she's fine, we cook a lot"),
            msg(10, 5, 3 * day + 2, 2, "nice"),
            msg(10, 6, 3 * day + 3, OWNER, "yeah it's good"),
            msg(10, 7, 6 * day, 2, "what's your kitten called again?"),
            msg(10, 8, 6 * day + 1, OWNER, "biscuit!!"),
        ],
    )
    config = config_from_dict({"paths": {"data_dir": str(tmp_path / "data")}})
    build_dataset(config, store)
    rows = {without_system(e)[-1][1]: e for e in examples(config)}
    # One trained reply per example: each gets the block of its own moment.
    for example in rows.values():
        trained = [m for m in example if m["role"] == "assistant" and m.get("weight", 1)]
        assert len(trained) == 1 and trained[0] is example[-1]
    system = {reply: block_of(e) for reply, e in rows.items()}  # type: ignore[arg-type]
    # Weeks later the kitten's name is recalled, from this chat only.
    assert "biscuit" in system["biscuit!!"] and "larkspur" not in system["biscuit!!"]
    # A reply never recalls itself or anything after its conversation began.
    assert "What you said before" not in system["we got a kitten, her name is biscuit"]
    assert "cook a lot" not in system["yeah it's good"]
    # The block sits on the newest message, the persona prompt stays as it is.
    biscuit = rows["biscuit!!"]
    assert (
        biscuit[0]["content"] == "You are Olga. Reply to this Telegram chat exactly as Olga would."
    )
    assert biscuit[-2]["memory"] == system["biscuit!!"] and biscuit[-2]["role"] == "user"
    assert (tmp_path / "data" / "memory.db").stat().st_mode & 0o777 == 0o600


def test_a_reply_that_restates_an_earlier_message_is_trained_with_it_in_its_block(
    store: Store, tmp_path: Path
) -> None:
    """Retrieval-augmented fine-tuning: where the search for the question misses the message
    a reply restates, the example's block holds it anyway, so the twin learns to take a fact
    from its block; a word the question itself holds proves nothing."""
    day = 24 * 60
    # Replies the question's search finds first ("plans"), each telling something new.
    plans = [
        f"plans: {what}"
        for what in (
            "cinema with tom",
            "sleeping in",
            "visiting grandma",
            "cleaning the flat",
            "football practice",
            "writing my thesis",
        )
    ]
    fill(
        store,
        [PERSONAL, Chat(11, "Vera", "personal_chat")],
        [
            msg(10, 1, 0, 2, "how is your sister?"),
            msg(10, 2, 1, OWNER, "good! the baby is due on the 3rd of march"),
            msg(11, 1, 1, 3, "any news?"),
            msg(11, 2, 2, OWNER, "my lease ends in march, keep it quiet"),
            *[
                m
                for n, text in enumerate(plans)
                for m in (
                    msg(10, 10 + 2 * n, (n + 1) * day, 2, "what are your plans?"),
                    msg(10, 11 + 2 * n, (n + 1) * day + 1, OWNER, text),
                )
            ],
            msg(10, 50, 20 * day, 2, "any plans for the spring?"),
            msg(10, 51, 20 * day + 1, OWNER, "knitting for the baby, it's due 3rd of march"),
            msg(10, 60, 30 * day, 2, "is it march already?"),
            msg(10, 61, 30 * day + 1, OWNER, "march!!"),
        ],
    )
    config = config_from_dict(
        {"paths": {"data_dir": str(tmp_path / "data")}, "memory": {"max_items": 2}}
    )
    summary = build_dataset(config, store)
    system = {without_system(e)[-1][1]: block_of(e) for e in examples(config)}  # type: ignore[arg-type]
    block = system["knitting for the baby, it's due 3rd of march"]
    assert "the baby is due on the 3rd of march" in block
    assert block.count('\n- "') == 2  # still [memory] max_items lines: one search hit gave way
    assert "lease" not in block  # from its own chat only
    # "march!!" answers a question holding "march": the search may find the message, but
    # it does not count as restated.
    assert summary.grounded == 1
    assert "1 replies restate a message their memory block holds" in summary.line()
