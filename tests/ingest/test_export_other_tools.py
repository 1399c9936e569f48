"""Exports written by other tools than Telegram Desktop, and exports whose chat ids need
their peer type: what imports, what is skipped and counted by reason, and what never merges."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ingest.dataset import build_dataset
from ingest.encoder import DIM
from ingest.export import import_export
from ingest.export_message import (
    KEPT_DATED_BY_DATE,
    KEPT_NO_SENDER_ID,
    KEPT_TEXT_FROM_ENTITIES,
    KEPT_TEXT_NOT_ENTITIES,
    SKIP_DATES_APART,
    SKIP_REPEATED_CHAT,
    SKIP_REPEATED_ID,
)
from ingest.memory import open_memory
from ingest.pii import PiiScrubber
from ingest.store import Chat, Store
from twin.core.config import config_from_dict

# --- exports written by other tools: each oddity imports what it can, counted -------------

T = 1_700_000_000  # 2023-11-14T22:13:20Z


def local(unix: int, hours: float = 3) -> str:
    """`date` as Telegram Desktop writes it: the exporting machine's wall clock (UTC+3)."""
    return datetime.fromtimestamp(unix + hours * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def said(mid: Any, text: Any = "hi", sender: Any = "user7", at: int = 0, **fields: Any) -> Any:
    message = {
        "id": mid,
        "type": "message",
        "date": local(T + 60 * at),
        "date_unixtime": str(T + 60 * at),
        "from": "Olga" if sender == "user1" else "Ann",
        "from_id": sender,
        "text": text,
    }
    return {**message, **fields}


def one_chat(tmp_path: Path, messages: list[Any], file: str = "result.json", **chat: Any) -> Path:
    """A single-chat export; a chat field given as None is left out."""
    fields = {"name": "Ann", "type": "personal_chat", "id": 7, **chat}
    path = tmp_path / file
    path.write_text(json.dumps({**{k: v for k, v in fields.items() if v is not None},
                                "messages": messages}))  # fmt: skip
    return path


def account(tmp_path: Path, chats: list[Any], name: str = "result.json") -> Path:
    path = tmp_path / name
    export = {
        "personal_information": {"user_id": 1, "first_name": "Olga"},
        "chats": {"list": chats},
    }
    path.write_text(json.dumps(export))
    return path


def texts(store: Store, chat_id: int) -> dict[int, str]:
    return {m.message_id: m.text for m in store.messages_of(chat_id)}


def test_sender_ids_that_are_not_numbers_are_kept_without_the_id(
    store: Store, tmp_path: Path
) -> None:
    odd = ["userabc", "user12ab", "userid42", "user", "user²", "channel-5", True, {"id": 7}]
    messages = [said(1, "mine", "user1")]
    messages += [said(n, f"odd {n}", sender, at=n) for n, sender in enumerate(odd, start=2)]
    summary = import_export(one_chat(tmp_path, messages), store, progress=False)
    stored = {m.message_id: m for m in store.messages_of(7)}
    assert summary.added == 1 + len(odd)
    assert all(stored[n].sender_id is None for n in range(2, 2 + len(odd)))
    assert stored[2].sender_name == "Ann" and stored[1].sender_id == 1
    assert summary.repaired == {KEPT_NO_SENDER_ID: len(odd)}
    assert "(none skipped; 8 kept without their sender id (not a number))" in summary.line()


def test_a_repeated_message_id_keeps_the_first_and_counts_the_rest(
    store: Store, tmp_path: Path
) -> None:
    messages = [said(1, "a"), said(2, "b", at=1), said(2, "c", at=2), said(3, "d", at=3)]
    messages += [said(2, "e", "userabc", at=4), said(1, "f", at=5)]  # out of order, too
    summary = import_export(one_chat(tmp_path, messages), store, me="1", progress=False)
    assert texts(store, 7) == {1: "a", 2: "b", 3: "d"}
    assert summary.skipped == {SKIP_REPEATED_ID: 3}
    assert summary.repaired == {}  # what was skipped is not counted as kept
    assert "3 with a repeated id" in summary.line()


def test_two_chats_with_one_id_are_not_merged(store: Store, tmp_path: Path) -> None:
    first = {"name": "Ann", "type": "personal_chat", "id": 7, "messages": [said(1, "from ann")]}
    second = {
        "name": "Not Ann",
        "type": "personal_chat",
        "id": 7,
        "messages": [said(1, "someone else"), said(2, "else again", at=1)],
    }
    summary = import_export(account(tmp_path, [first, second]), store, progress=False)
    assert store.chats() == [Chat(7, "Ann", "personal_chat")]
    assert texts(store, 7) == {1: "from ann"}
    assert summary.chats == 1 and summary.skipped == {SKIP_REPEATED_CHAT: 2}


def test_negative_ids_after_a_group_became_a_supergroup(store: Store, tmp_path: Path) -> None:
    # Telegram Desktop writes the supergroup's bare id and its messages from the days it was a
    # basic group with negative ids; a tool built on the Bot API writes the chat's -100 id.
    desktop = [
        said(-999999998, "from the old group", "user1"),
        said(-999999997, "old reply", at=1, reply_to_message_id=-999999998),
        {**said(1, "", at=2), "type": "service", "action": "migrate_from_group"},
        said(2, "in the supergroup", at=3),
    ]
    import_export(
        one_chat(tmp_path, desktop, "a.json", type="private_supergroup", id=123),
        store,
        me="1",
        progress=False,
    )
    bot_api = [said(2, "in the supergroup", at=3), said(3, "later", at=4)]
    summary = import_export(
        one_chat(tmp_path, bot_api, "b.json", type="private_supergroup", id=-1000000000123),
        store,
        me="1",
        progress=False,
    )
    assert [c.chat_id for c in store.chats()] == [-1000000000123]
    assert texts(store, -1000000000123) == {
        -999999998: "from the old group",
        -999999997: "old reply",
        1: "",
        2: "in the supergroup",
        3: "later",
    }
    assert (summary.added, summary.skipped) == (1, {"already stored": 1})
    old = {m.message_id: m for m in store.messages_of(-1000000000123)}[-999999997]
    assert old.reply_to == -999999998
    # A basic group's own negative id stays what it is.
    import_export(
        one_chat(tmp_path, [said(1)], "c.json", type="private_group", id=-4567),
        store,
        me="1",
        progress=False,
    )
    assert -4567 in {c.chat_id for c in store.chats()}


def test_a_chat_without_a_name_or_a_type_is_kept_apart(store: Store, tmp_path: Path) -> None:
    lines = [said(1, "hi olga"), said(2, "hey ann", "user1", at=1)]
    import_export(one_chat(tmp_path, lines, "a.json", name=None, type=None), store, me="1")
    # The same bare id in a typed export: user 7. Which kind the first chat was is unknown,
    # so the two are not merged (the first could be a group 7, with other people's words).
    typed = [said(1, "hi olga"), said(2, "hey ann", "user1", at=1), said(3, "bye", at=2)]
    import_export(one_chat(tmp_path, typed, "b.json"), store)
    assert store.chats() == [Chat(-(2**52 + 7), None, None), Chat(7, "Ann", "personal_chat")]
    # Neither name, type nor id: an id of its own, stable across imports.
    bare = one_chat(tmp_path, [said(1, "hello"), said(2, "hey", "user1", at=1)], "c.json",
                    name=None, type=None, id=None)  # fmt: skip
    assert import_export(bare, store).chats == 1 and store.count_chats() == 3
    config = config_from_dict(
        {"paths": {"data_dir": str(tmp_path / "d")}, "memory": {"enabled": False}}
    )
    assert build_dataset(config, store, progress=False).chats_used == 3


def test_date_unixtime_zero_falls_back_to_date(store: Store, tmp_path: Path) -> None:
    messages = [
        said(1, date_unixtime="0", date="2023-05-01T15:00:00"),
        said(2, date_unixtime="-5", date="2023-05-01T15:01:00"),
        said(3, date_unixtime="", date="2023-05-01T15:02:00"),
        said(4, date_unixtime="0", date="1970-01-01T03:00:00"),  # no date at all
    ]
    summary = import_export(one_chat(tmp_path, messages), store, me="1", progress=False)
    dates = {m.message_id: m.date for m in store.messages_of(7)}
    assert dates == {1: 1682953200, 2: 1682953260, 3: 1682953320}
    assert summary.repaired == {KEPT_DATED_BY_DATE: 2}  # "" is no date given, not a bad one
    assert summary.skipped == {"without a usable date": 1}


def test_dates_hours_apart_are_a_time_zone_days_apart_are_skipped(
    store: Store, tmp_path: Path
) -> None:
    messages = [
        said(1, date=local(T, hours=3)),
        said(2, date=local(T + 60, hours=-11), at=1),
        said(3, date=local(T + 120, hours=14), at=2),  # Kiribati
        said(4, date=local(T + 180, hours=3 * 24), at=3),  # 3 days off: which one is right?
        said(5, date=local(T + 240, hours=-20), at=4),
    ]
    summary = import_export(one_chat(tmp_path, messages), store, me="1", progress=False)
    # date_unixtime is UTC, the truth; date only the exporting machine's wall clock.
    assert {m.message_id: m.date for m in store.messages_of(7)} == {1: T, 2: T + 60, 3: T + 120}
    assert summary.skipped == {SKIP_DATES_APART: 2}
    assert "2 with date and date_unixtime over 14 h apart" in summary.line()


def test_a_date_like_hour_25_is_no_date(store: Store, tmp_path: Path) -> None:
    messages = [
        said(1, date="2023-05-01T25:00:00", date_unixtime=None),
        said(2, date="2023-02-30T10:00:00", date_unixtime=None),
        said(3, date="2023-05-01T25:00:00", at=2),  # date_unixtime says when
    ]
    summary = import_export(one_chat(tmp_path, messages), store, me="1", progress=False)
    assert {m.message_id: m.date for m in store.messages_of(7)} == {3: T + 120}
    assert summary.skipped == {"without a usable date": 2}


def test_text_that_disagrees_with_text_entities(store: Store, tmp_path: Path) -> None:
    messages = [
        said(1, "hello world", text_entities=[{"type": "plain", "text": "hello there"}]),
        said(2, "", text_entities=[{"type": "bold", "text": "only here"}], at=1),
        said(
            3,
            ["see ", {"type": "link", "text": "x.org"}],
            text_entities=[{"type": "plain", "text": "see "}, {"type": "link", "text": "x.org"}],
            at=2,
        ),
        said(4, "no entities written", text_entities=[], at=3),
    ]
    del messages[1]["text"]
    summary = import_export(one_chat(tmp_path, messages), store, me="1", progress=False)
    assert texts(store, 7) == {
        1: "hello world",  # text is what every tool reads: it wins, and is counted
        2: "only here",
        3: "see x.org",
        4: "no entities written",
    }
    assert summary.repaired == {KEPT_TEXT_NOT_ENTITIES: 1, KEPT_TEXT_FROM_ENTITIES: 1}


def test_values_of_every_shape_are_read_as_written(store: Store, tmp_path: Path) -> None:
    deep = {"extra": {"deep": [[1, {"x": None}], True, 2.5]}}
    messages = [
        said(
            1,
            ["a ", {"type": "bold", "text": "b", **deep}, " c"],
            # Entities are objects with a string "text"; nothing else adds to their text.
            text_entities=[
                {"type": "plain", "text": "a "},
                ["stray", {"text": "no"}],
                7,
                {"type": "bold", "text": "b", "more": {"text": "no"}, **deep},
                {"type": "plain", "text": 5},
                {"type": "plain", "text": " c"},
            ],
            reactions=[{"type": "emoji", "count": 2, "recent": [{"from": "Ann", **deep}]}],
        ),
        said(2, "", at=1, poll={"question": "?", "answers": [{"text": "y", "voters": 1}]}),
        said(3, "kept", at=2, text_entities="not a list of entities"),
        said(4, "kept too", at=3, text_entities={"text": "an object"}, reactions="odd"),
        said(5, "", at=4, text_entities=[{"type": "plain", "text": "from entities"}]),
        said(6, "last", at=5, inline_bot_buttons=[[{"type": "callback", "text": "Yes"}]]),
    ]
    summary = import_export(one_chat(tmp_path, messages), store, me="1", progress=False)
    stored = {m.message_id: (m.text, m.media_type) for m in store.messages_of(7)}
    assert stored == {
        1: ("a b c", None),
        2: ("", "poll"),
        3: ("kept", None),
        4: ("kept too", None),
        5: ("from entities", None),
        6: ("last", None),
    }
    assert summary.repaired == {KEPT_TEXT_FROM_ENTITIES: 1} and summary.skipped == {}


def test_never_edited_written_as_a_1970_date(store: Store, tmp_path: Path) -> None:
    messages = [
        said(1, edited="1970-01-01T05:00:00"),  # old exports, UTC+5
        said(2, edited="1969-12-31T19:00:00", edited_unixtime="-18000", at=1),  # UTC-5
        said(3, edited="1970-01-01T03:00:00", edited_unixtime="0", at=2),
        said(4, edited=local(T + 400), edited_unixtime=str(T + 400), at=3),  # edited for real
    ]
    summary = import_export(one_chat(tmp_path, messages), store, me="1", progress=False)
    edits = {m.message_id: m.edited for m in store.messages_of(7)}
    assert edits == {1: None, 2: None, 3: None, 4: T + 400}
    assert summary.skipped == {}


def test_the_dataset_builds_from_a_file_with_every_oddity(store: Store, tmp_path: Path) -> None:
    lines = []
    for n in range(0, 40, 2):  # 20 conversations, two hours apart
        lines += [
            said(n + 1, f"question {n}", at=60 * n),
            said(n + 2, f"answer {n}", "user1", at=60 * n + 1),
        ]
    lines += [
        said(100, "odd sender", "userX"),
        said(3, "repeated"),
        said(101, "zero", date_unixtime="0", date="2023-05-01T15:00:00"),
        said(102, "days off", date=local(T, hours=100)),
        said(103, "hour 25", date="2023-05-01T25:00:00", date_unixtime=None),
        said(104, "text", text_entities=[{"type": "plain", "text": "other"}]),
        said(105, "never edited", edited_unixtime="-10800"),
    ]
    twin = {"name": "Ann", "type": "personal_chat", "id": 7, "messages": lines}
    summary = import_export(account(tmp_path, [twin, {**twin, "name": "Ann again"}]), store)
    assert summary.added == 44 and summary.chats == 1
    assert summary.skipped == {
        SKIP_REPEATED_ID: 1,
        SKIP_DATES_APART: 1,
        "without a usable date": 1,
        SKIP_REPEATED_CHAT: len(lines),
    }
    config = config_from_dict(
        {"paths": {"data_dir": str(tmp_path / "d")}, "memory": {"enabled": False}}
    )
    built = build_dataset(config, store, progress=False)
    assert built.train + built.eval >= 10


# --- chat and sender ids carry their peer type ---------------------------------------------


class FlatEmbedder:
    """Every text the same vector: enough to index; which entries exist is what is checked."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        out[:, 0] = 1.0
        return out


def test_a_user_and_a_group_with_one_bare_id_stay_two_chats(store: Store, tmp_path: Path) -> None:
    person = {
        "name": "Vera",
        "type": "personal_chat",
        "id": 123,
        "messages": [said(1, "hi", "user123"), said(2, "i live in leeds", "user1", at=1)],
    }
    group = {
        "name": "Team",
        "type": "private_group",
        "id": 123,
        "messages": [said(1, "plans?", "user5"), said(2, "the vault code is 42", "user1", at=1)],
    }
    summary = import_export(account(tmp_path, [person, group]), store, progress=False)
    assert (summary.chats, summary.added) == (2, 4)
    assert store.chats() == [
        Chat(-123, "Team", "private_group"),
        Chat(123, "Vera", "personal_chat"),
    ]
    assert texts(store, 123) == {1: "hi", 2: "i live in leeds"}
    assert texts(store, -123) == {1: "plans?", 2: "the vault code is 42"}
    # Two memory scopes: what was said in the group is never recalled in Vera's chat.
    with open_memory(tmp_path / "memory.db") as memory:
        memory.update(store, PiiScrubber(regions=("GB",)), FlatEmbedder(), progress=False)
        found = memory.search("vault code", chats={123}, embedder=FlatEmbedder())
        assert {r.chat_id for r in found} <= {123} and not any("vault" in r.text for r in found)


def test_a_channel_with_the_owners_id_is_not_the_owner(store: Store, tmp_path: Path) -> None:
    messages = [
        said(1, "who posts here", "user5"),
        said(2, "the channel speaking", "channel1", at=1),
        said(3, "olga herself", "user1", at=2),
    ]
    import_export(one_chat(tmp_path, messages, type="private_supergroup", id=99), store, me="1")
    owner = store.owner()
    assert owner is not None
    by_id = {m.message_id: m for m in store.messages_of(-1000000000099)}
    assert by_id[2].sender_id == -1000000000001 and not owner.wrote(by_id[2])
    assert owner.wrote(by_id[3])
