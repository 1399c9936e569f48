"""Importing Telegram Desktop exports: real files written by other projects, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.dataset import build_dataset
from ingest.export import (
    KEPT_DATED_BY_DATE,
    KEPT_NO_SENDER_ID,
    KEPT_TEXT_FROM_ENTITIES,
    KEPT_TEXT_NOT_ENTITIES,
    SKIP_DATES_APART,
    SKIP_REPEATED_CHAT,
    SKIP_REPEATED_ID,
    flatten_text,
    import_export,
    message_from_export,
    parse_me,
)
from ingest.memory import DIM, open_memory
from ingest.pii import PiiScrubber
from ingest.store import Chat, Owner, Store, open_store
from twin.core.config import config_from_dict
from twin.core.errors import TwinError

# file -> (--me, chats, messages stored, owner id). Counts were checked against the files:
# every message object is stored except the "unsupported" entry with no date in each
# Tkonverter file.
FIXTURES = {
    "chat-history-manager-rust__telegram_2020-01__result.json": ("", 4, 50, 11111111),
    "chat-history-manager-rust__telegram_2021-05__result.json": ("", 1, 3, 11111111),
    "chat-history-manager-rust__telegram_2021-06_supergroup__result.json": ("", 1, 4, 11111111),
    "chat-history-manager-rust__telegram_2021-07__result.json": ("", 1, 2, 11111111),
    "chat-history-manager-rust__telegram_2023-01__result.json": ("", 1, 6, 11111111),
    "chat-history-manager-rust__telegram_2023-08__result.json": ("", 1, 2, 11111111),
    "chat-history-manager-rust__telegram_2023-10_audio-video__result.json": ("", 1, 4, 11111111),
    "chat-history-manager-rust__telegram_2023-11__result.json": ("", 1, 1, 11111111),
    "chat-history-manager-rust__telegram_2024-01__result.json": ("", 1, 2, 11111111),
    "chat-history-manager-rust__telegram_2024-01_inline-bot-buttons__result.json": (
        "",
        1,
        5,
        11111111,
    ),
    "chat-history-manager-rust__telegram_2024-02_create-channel_saved-from__result.json": (
        "",
        1,
        2,
        11111111,
    ),
    "Tkonverter__result.json": ("", 1, 86, 777000),
    "Tkonverter__result_group.json": ("777000", 1, 44, 777000),
    "langchain-community__result.json": ("", 1, 6, 6565661032),
    "langchain-community__telegram_legacy.json": ("", 1, 3, 4325636679),
    "telegram-export-sqlite__json_export_result.json": ("user12345", 1, 4, 12345),
    "telegram-export-sqlite__voice_export_result.json": ("Alice", 1, 1, 12345),
    "chatstyle__result.json": ("", 1, 12, 111),
    "chat-miner__test_single_export.json": ("Author 1", 1, 2, None),
    "chat-miner__test_batch_export.json": ("Author 1", 1, 2, None),
}


def test_every_json_fixture_is_covered(exports: Path) -> None:
    on_disk = {p.name for p in exports.glob("*.json")}
    assert on_disk == set(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_imports_with_expected_counts(name: str, exports: Path, store: Store) -> None:
    me, chats, messages, owner_id = FIXTURES[name]
    summary = import_export(exports / name, store, me=me, progress=False)
    assert (summary.chats, summary.added) == (chats, messages)
    assert store.count_messages() == messages
    assert store.count_chats() == chats
    owner = store.owner()
    assert owner is not None and owner.user_id == owner_id


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_reimport_adds_nothing(name: str, exports: Path, store: Store, tmp_path: Path) -> None:
    me, _, messages, _ = FIXTURES[name]
    first = import_export(exports / name, store, me=me, progress=False)
    # The very same file: recognised by its hash, not parsed again.
    again = import_export(exports / name, store, me=me, progress=False)
    assert again.unchanged and again.added == 0 and again.owner == first.owner
    assert "already imported (same file)" in again.line()
    # A different file with the same messages (a newer export of the same account):
    # parsed, and every message is found already stored.
    copy = tmp_path / "result.json"
    copy.write_bytes((exports / name).read_bytes() + b"\n")
    later = import_export(copy, store, me=me, progress=False)
    assert not later.unchanged and later.added == 0
    assert later.skipped["already stored"] == messages
    assert store.count_messages() == messages


def _by_id(store: Store, chat_id: int) -> dict[int, object]:
    return {m.message_id: m for m in store.messages_of(chat_id)}


def test_full_account_export_old_format_details(exports: Path, store: Store) -> None:
    import_export(
        exports / "chat-history-manager-rust__telegram_2020-01__result.json", store, progress=False
    )
    owner = store.owner()
    assert owner == Owner(11111111, "Aaaaa Aaaaaaaaaaa", "+998 91 1234567")
    group = _by_id(store, -8123123123)  # a basic group: keyed -id (ingest.peers)
    # A reply written by the owner, edited; the list-shaped text flattened to plain text.
    reply = group[39740]
    assert (
        reply.text == "+, окно в Ад"
        and reply.reply_to == 39739
        and reply.sender_id == owner.user_id
    )
    assert group[67346].edited == 1542416285
    # "edited": "1970-01-01T05:00:00" means never edited in this old format.
    assert group[39740].edited is None
    # Media without text is a typed record; a forward is marked as not the sender's words.
    assert (group[4744].media_type, group[4744].text) == ("sticker", "")
    assert group[10355].media_type == "voice_message"
    assert group[39125].forwarded_from == "Hearthstone Channel"
    assert group[39125].text == "Всех с наступающим!🐶🍾🎄"  # a caption is kept as text
    # Service messages are stored, typed, with their actor.
    kinds = {m.kind for m in group.values()}
    assert kinds == {"message", "service"}
    # A contact whose names are null: the message keeps its id and text, no name.
    null_named = _by_id(store, 4321012345)[24712]
    assert null_named.sender_name is None and null_named.text == "Message from null-names contact"
    # No date_unixtime in this format: the ISO date is used.
    assert null_named.date == 1498248660


def test_single_chat_export_with_text_entities(exports: Path, store: Store) -> None:
    import_export(exports / "langchain-community__result.json", store, progress=False)
    messages = _by_id(store, 5965280513)
    assert messages[5].text == "this is bold text: BOLD TEXT"
    assert messages[6].text == "this is an email: admin@example.com"
    assert store.chats()[0].name == "Jimmeny"


def test_owner_from_personal_chat_with_drifting_names(exports: Path, store: Store) -> None:
    # The chat is named "Grace …" and her messages come from "Grace … 💍": she is the peer.
    import_export(exports / "langchain-community__telegram_legacy.json", store, progress=False)
    assert store.owner() == Owner(4325636679, "Henry")


def test_minimal_export_without_ids_gets_stable_synthetic_ids(exports: Path, store: Store) -> None:
    path = exports / "chat-miner__test_single_export.json"
    import_export(path, store, me="Author 1", progress=False)
    (chat,) = store.chats()
    assert chat.chat_id < 0  # a hash: a group's marked id equals one by chance only (1 in 2**48)
    assert [m.message_id for m in store.messages_of(chat.chat_id)] == [1, 2]
    assert store.owner() == Owner(None, "Author 1")
    assert import_export(path, store, me="Author 1", progress=False).added == 0


def test_me_wins_over_the_export(exports: Path, store: Store) -> None:
    path = exports / "chat-history-manager-rust__telegram_2021-05__result.json"
    import_export(path, store, me="user22222222", progress=False)
    assert store.owner().user_id == 22222222


def test_unknown_owner_is_a_clear_error_and_store_unchanged(exports: Path, store: Store) -> None:
    with pytest.raises(TwinError, match=r"pass --me.*'Me' \(id 777000\)"):
        import_export(exports / "Tkonverter__result_group.json", store, progress=False)
    assert store.count_messages() == 0 and store.owner() is None


def test_export_of_another_account_is_refused(exports: Path, store: Store) -> None:
    import_export(exports / "langchain-community__result.json", store, progress=False)
    path = exports / "chat-history-manager-rust__telegram_2021-05__result.json"
    with pytest.raises(TwinError, match="store holds user 6565661032"):
        import_export(path, store, progress=False)
    assert store.count_messages() == 6


def test_folder_with_result_json_imports(exports: Path, store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "Telegram Desktop" / "ChatExport_2024-01-01"
    folder.mkdir(parents=True)
    (folder / "result.json").write_bytes((exports / "chatstyle__result.json").read_bytes())
    assert import_export(folder, store, progress=False).added == 12


def test_flatten_text() -> None:
    assert flatten_text("plain") == "plain"
    assert flatten_text(["see ", {"type": "link", "text": "https://x.org"}, "!"]) == (
        "see https://x.org!"
    )
    assert flatten_text(None) == ""


def test_message_from_export_forward_and_deleted_account() -> None:
    raw = {
        "id": 3,
        "type": "message",
        "date_unixtime": "1700000000",
        "from": None,
        "from_id": "user5",
        "forwarded_from": None,
        "text": "x",
    }
    m, _ = message_from_export(1, raw)
    assert m is not None
    assert m.sender_name is None and m.sender_id == 5 and m.forwarded_from == "unknown"
    assert message_from_export(1, {"id": 4, "type": "message", "text": "no date"}) == (
        None,
        "without a usable date",
    )


def test_parse_me() -> None:
    assert parse_me("123") == Owner(123)
    assert parse_me("user123") == Owner(123)
    assert parse_me("Anna K") == Owner(None, "Anna K")


# --- bad input: one clear error naming the file, store untouched ---------------------------


def _bad_inputs(exports: Path, tmp: Path) -> dict[str, Path]:
    good = (exports / "chat-history-manager-rust__telegram_2020-01__result.json").read_bytes()
    files = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "binary": bytes(range(256)) * 8,
        "not an export": json.dumps({"hello": [1, 2, 3]}).encode(),
        "other program's json": json.dumps({"name": "notes", "items": [{"a": 1}]}).encode(),
        "messages not a list": json.dumps(
            {"name": "A", "type": "personal_chat", "id": 5, "messages": "oops"}
        ).encode(),
        "chat list not a list": json.dumps({"chats": {"list": {"a": 1}}}).encode(),
        "nested deep": b'{"messages": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        "json array": b"[1, 2, 3]",
        "html export": (exports / "langchain-community__messages.html").read_bytes(),
        "whatsapp": next((exports / "whatsapp").glob("*.txt")).read_bytes(),
    }
    paths = {}
    for kind, data in files.items():
        path = tmp / f"{kind.replace(' ', '_')}.json"
        path.write_bytes(data)
        paths[kind] = path
    paths["missing"] = tmp / "nope.json"
    return paths


BAD_MESSAGES = {
    "truncated": "truncated or malformed JSON",
    "empty": "empty file",
    "binary": "binary file",
    "not an export": "not a Telegram Desktop export (no 'messages' or 'chats' key)",
    "other program's json": "not a Telegram Desktop export (no 'messages' or 'chats' key)",
    "messages not a list": "'messages' is a string, not a list",
    "chat list not a list": "'chats.list' is an object, not a list",
    "nested deep": "nested more than 64 levels deep",
    "json array": "not a Telegram Desktop export",
    "html export": "HTML export",
    "whatsapp": "not a Telegram Desktop export",
    "missing": "no such file",
}


@pytest.mark.parametrize("kind", sorted(BAD_MESSAGES))
def test_bad_input_leaves_store_unchanged(
    kind: str, exports: Path, store: Store, tmp_path: Path
) -> None:
    import_export(exports / "chatstyle__result.json", store, progress=False)
    before = (store.count_messages(), store.count_chats(), store.owner())
    path = _bad_inputs(exports, tmp_path)[kind]
    for me in ("", "Ann"):  # naming the owner makes no non-export acceptable
        with pytest.raises(TwinError) as err:
            import_export(path, store, me=me, progress=False)
        assert str(path) in str(err.value) and BAD_MESSAGES[kind] in str(err.value)
        assert (store.count_messages(), store.count_chats(), store.owner()) == before


def test_a_deeply_nested_file_is_refused_in_bounded_memory(store: Store, tmp_path: Path) -> None:
    import resource

    path = tmp_path / "deep.json"
    path.write_bytes(b'{"messages": [{"id": 1, "text": ' + b"[" * 200_000 + b"]" * 200_000 + b"}]}")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(TwinError, match="nested more than 64 levels"):
        import_export(path, store, progress=False)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50  # it took ~20 GB before the cap


def test_malformed_json_error_quotes_no_message_text(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    secret = "my door code is 4417, don't tell anyone"
    path.write_text(
        '{"messages": [{"id": 1, "date_unixtime": "1700000000", "text": "' + secret + '", }'
    )
    with pytest.raises(TwinError) as err:
        import_export(path, store, progress=False)
    message = str(err.value)
    assert "malformed JSON" in message and "bytes" in message
    assert "4417" not in message and "door" not in message


def test_a_broken_message_is_skipped_and_counted_not_fatal(store: Store, tmp_path: Path) -> None:
    good = {"type": "message", "date_unixtime": "1700000000", "from": "Ann", "from_id": "user7"}
    chat = {
        "name": "Ann",
        "type": "personal_chat",
        "id": 7,
        "messages": [
            {**good, "id": 1, "text": "fine"},
            {**good, "id": None, "text": "no id"},
            {**good, "id": "abc", "text": "a word for an id"},
            {
                **good,
                "id": 4,
                "text": "edited in the year 10^20",
                "edited_unixtime": "1" + "0" * 20,
            },
            {**good, "id": 5, "date_unixtime": "9" * 30, "text": "dated after the sun died"},
            {**good, "id": 6, "text": "also fine", "reply_to_message_id": "9" * 25},
        ],
    }
    path = tmp_path / "result.json"
    path.write_text(json.dumps(chat))
    summary = import_export(path, store, me="user1", progress=False)
    assert summary.added == 2
    assert summary.skipped == {
        "without a usable id": 2,
        "with a damaged edit date": 1,
        "without a usable date": 1,
    }
    assert "2 without a usable id" in summary.line()


def test_someone_elses_single_chat_export_is_refused(
    exports: Path, store: Store, tmp_path: Path
) -> None:
    import_export(exports / "chat-history-manager-rust__telegram_2020-01__result.json", store)
    owner = store.owner()
    assert owner is not None and owner.user_id is not None
    stranger = {
        "name": "Bob",
        "type": "personal_chat",
        "id": 9191,
        "messages": [
            {
                "id": n,
                "type": "message",
                "date_unixtime": str(1700000000 + n),
                "from": who,
                "from_id": f"user{uid}",
                "text": "hi",
            }
            for n, (who, uid) in enumerate([("Bob", 9191), ("Carol", 9292)] * 3, start=1)
        ],
    }
    path = tmp_path / "carol_and_bob.json"
    path.write_text(json.dumps(stranger))
    before = store.count_messages()
    with pytest.raises(TwinError, match="someone else's chat"):
        import_export(path, store, progress=False)
    assert store.count_messages() == before and store.owner() == owner


def test_cli_bad_input_is_one_line_no_traceback(exports: Path, tmp_path: Path) -> None:
    path = _bad_inputs(exports, tmp_path)["truncated"]
    config = tmp_path / "config.toml"
    config.write_text('[paths]\ndata_dir = "d"\n')
    result = subprocess.run(
        [sys.executable, "-m", "twin", "--config", str(config), "ingest", "export", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "Traceback" not in result.stderr and str(path) in result.stderr
    with open_store(tmp_path / "d" / "twin.db") as store:
        assert store.count_messages() == 0


def test_cli_import_status_and_private_files(exports: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[paths]\ndata_dir = "d"\n')
    twin = [sys.executable, "-m", "twin", "--config", str(config)]
    path = exports / "chat-history-manager-rust__telegram_2020-01__result.json"
    out = subprocess.run(
        [*twin, "ingest", "export", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "4 chats, 50 messages added" in out and "messages/s" in out
    status = json.loads(
        subprocess.run(
            [*twin, "status", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )
    assert (status["messages"], status["chats"], status["examples"]) == (50, 4, 0)
    data = tmp_path / "d"
    assert os.stat(data).st_mode & 0o777 == 0o700
    assert os.stat(data / "twin.db").st_mode & 0o777 == 0o600


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
