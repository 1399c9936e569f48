"""Importing Telegram Desktop exports: real files written by other projects, and bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tqdm import tqdm

import ingest.export
from ingest.export import MAX_DEPTH, import_export, parse_me
from ingest.export_message import (
    flatten_text,
    message_from_export,
)
from ingest.store import Owner, Store, open_store
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


def test_a_newer_export_adds_what_the_older_lacked_row_for_row(
    store: Store, tmp_path: Path
) -> None:
    # Enough messages for several batches and store statements, none a round number, and
    # fields of every column set on some messages only.
    def message(n: int) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "id": n,
            "type": "message",
            "date_unixtime": str(1_700_000_000 + 60 * n),
            "from": "Ann" if n % 2 else "Olga",
            "from_id": "user7" if n % 2 else "user1",
            "text": f"message {n}",
        }
        if n % 3 == 0:
            fields["reply_to_message_id"] = n - 1
        if n % 5 == 0:
            fields["media_type"] = "voice_message"
        if n % 7 == 0:
            fields["edited_unixtime"] = str(1_700_000_000 + 60 * n + 30)
        if n % 11 == 0:
            fields["forwarded_from"] = "Bob"
        return fields

    def export(name: str, ids: range) -> Path:
        path = tmp_path / name
        chat = {"name": "Ann", "type": "personal_chat", "id": 7}
        path.write_text(json.dumps({**chat, "messages": [message(n) for n in ids]}))
        return path

    older = import_export(export("older.json", range(1, 2950, 2)), store, me="1", progress=False)
    newer = import_export(export("newer.json", range(1, 4334)), store, me="1", progress=False)
    assert (older.added, newer.added, newer.skipped) == (1475, 2858, {"already stored": 1475})
    assert list(store.messages_of(7)) == [
        message_from_export(7, message(n))[0] for n in range(1, 4334)
    ]


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


# Where a file nests `levels` deep (the document is level 1), in a single-chat export whose
# one message is level 3: each part of the reader counts depth on its own.
NESTED_AT = {
    "outside messages": lambda levels: f'"about": {_lists(levels - 1)}, "messages": [{{{_MSG}}}]',
    "in a message's text": lambda levels: f'"messages": [{{{_MSG}, "text": {_lists(levels - 3)}}}]',
    "in skipped reactions": lambda levels: (
        f'"messages": [{{{_MSG}, "reactions": {_lists(levels - 3)}}}]'
    ),
    "in text_entities": lambda levels: (
        f'"messages": [{{{_MSG}, "text_entities": [{{"more": {_lists(levels - 5)}}}]}}]'
    ),
}
_MSG = '"id": 1, "date_unixtime": "1700000000", "from": "Ann", "from_id": "user7"'


def _lists(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize("where", sorted(NESTED_AT))
def test_nesting_is_refused_past_max_depth_and_not_before(
    where: str, store: Store, tmp_path: Path
) -> None:
    chat = '"name": "Ann", "type": "personal_chat", "id": 7'
    deepest = tmp_path / "deepest.json"
    deepest.write_text("{" + chat + ", " + NESTED_AT[where](MAX_DEPTH) + "}")
    assert import_export(deepest, store, me="7", progress=False).added == 1
    too_deep = tmp_path / "too_deep.json"
    too_deep.write_text("{" + chat + ", " + NESTED_AT[where](MAX_DEPTH + 1) + "}")
    with pytest.raises(TwinError, match=f"nested more than {MAX_DEPTH} levels"):
        import_export(too_deep, store, me="7", progress=False)


def test_the_progress_bar_follows_the_parser(
    exports: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[tqdm] = []

    class ShownBar(tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "disable": False, "file": io.StringIO()})
            bars.append(self)

    monkeypatch.setattr(ingest.export, "tqdm", ShownBar)
    path = exports / "chat-history-manager-rust__telegram_2020-01__result.json"
    import_export(path, store)
    assert [(bar.n, bar.total) for bar in bars] == [(path.stat().st_size,) * 2]


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
