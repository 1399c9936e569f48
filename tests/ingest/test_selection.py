"""`[ingest] include_chats` / `exclude_chats` through renames: real exports imported twice into
a real store, then everything that reads the selection (dataset, memory, profile facts).

The Telethon pull's side of the same promise is in test_telegram.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest.dataset import build_dataset
from ingest.encoder import DIM
from ingest.export import import_export
from ingest.profile import fact_listing
from ingest.recall import open_recall
from ingest.selection import ChatSelection
from ingest.store import Chat, Store, open_store
from twin.app.status import status_of
from twin.core.config import Config, config_from_dict

OWNER = 1
T0 = 1_700_000_000
SECRET_CLUB = 500  # a basic group: the store keys it -500


class FlatEmbedder:
    """Every text the same vector: enough to index; which entries exist is what is checked."""

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        out[:, 0] = 1.0
        return out


def chat(chat_id: int, name: str, kind: str, lines: list[tuple[int, str]], first: int = 1) -> Any:
    """A chat of a full-account export: (sender user id, text) lines a minute apart."""
    return {
        "name": name,
        "type": kind,
        "id": chat_id,
        "messages": [
            {
                "id": first + n,
                "type": "message",
                "date_unixtime": str(T0 + 60 * (first + n)),
                "from": "Olga" if sender == OWNER else f"Friend {sender}",
                "from_id": f"user{sender}",
                "text": text,
            }
            for n, (sender, text) in enumerate(lines)
        ],
    }


def write_export(path: Path, *chats: Any) -> Path:
    export = {
        "personal_information": {"user_id": OWNER, "first_name": "Olga"},
        "chats": {"list": list(chats)},
    }
    path.write_text(json.dumps(export))
    return path


def config_for(tmp_path: Path, memory: bool = False, **ingest: list[str]) -> Config:
    return config_from_dict(
        {
            "paths": {"data_dir": str(tmp_path / "data")},
            "ingest": dict(ingest),
            "memory": {"enabled": memory},
        }
    )


def trained_replies(config: Config) -> set[str]:
    replies = set()
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (config.dataset_dir / name).read_text().splitlines():
            messages = json.loads(line)["messages"]
            replies |= {m["content"] for m in messages if m["role"] == "assistant"}
    return replies


BORIS = chat(42, "Boris", "personal_chat", [(42, "hi there"), (OWNER, "hi boris")])
SECRET_BEFORE = chat(
    SECRET_CLUB,
    "Secret Club",
    "private_group",
    [(7, "so who knows"), (OWNER, "the plan is at dawn"), (7, "where do you live"),
     (OWNER, "i live in secretville")],
)  # fmt: skip
# The same group in a later export, renamed, with what was said since.
SECRET_AFTER = chat(
    SECRET_CLUB,
    "Book Club",
    "private_group",
    [(7, "anything new"), (OWNER, "the vault code is 1234")],
    first=10,
)


@pytest.mark.parametrize("dataset_between", [True, False])
def test_an_excluded_chat_stays_excluded_after_a_rename_in_a_later_export(
    dataset_between: bool, store: Store, tmp_path: Path
) -> None:
    # dataset_between: the name pinned the chat's id when the dataset was built; without it,
    # the store's record of the chat's names still knows it was "Secret Club".
    config = config_for(tmp_path, exclude_chats=["secret club"])
    import_export(write_export(tmp_path / "a.json", BORIS, SECRET_BEFORE), store, progress=False)
    if dataset_between:
        build_dataset(config, store, progress=False)
        assert trained_replies(config) == {"hi boris"}
    import_export(write_export(tmp_path / "b.json", BORIS, SECRET_AFTER), store, progress=False)

    summary = build_dataset(config, store, progress=False)

    assert trained_replies(config) == {"hi boris"}
    assert Chat(-SECRET_CLUB, "Book Club", "private_group") in store.chats()
    assert summary.skipped["chats excluded by config"] == 1
    assert summary.notes == []
    # The memory index never takes it in either, and the profile facts never read it.
    with open_recall(
        config_for(tmp_path, memory=True, exclude_chats=["secret club"]),
        store,
        embedder=FlatEmbedder(),
        progress=False,
    ) as memory:
        assert memory is not None
        assert memory.index.count() > 0 and memory.index.count(-SECRET_CLUB) == 0
    assert "secretville" not in fact_listing(config)
    assert "secretville" in fact_listing(config_for(tmp_path))  # it is there to be mined


def test_an_included_chat_stays_included_and_its_old_name_takes_in_no_other(
    store: Store, tmp_path: Path
) -> None:
    config = config_for(tmp_path, include_chats=["Boris"])
    import_export(write_export(tmp_path / "a.json", BORIS, SECRET_BEFORE), store, progress=False)
    build_dataset(config, store, progress=False)
    assert trained_replies(config) == {"hi boris"}
    # Boris renames himself; someone else now goes by "Boris".
    renamed = chat(42, "Boris K", "personal_chat", [(42, "new phone"), (OWNER, "saved it")], 10)
    other = chat(43, "Boris", "personal_chat", [(43, "hello?"), (OWNER, "who is this")])
    import_export(write_export(tmp_path / "b.json", renamed, other), store, progress=False)

    build_dataset(config, store, progress=False)

    assert trained_replies(config) == {"hi boris", "saved it"}


def test_entries_that_match_no_chat_are_reported(store: Store, tmp_path: Path) -> None:
    config = config_for(tmp_path, include_chats=["Boris", "Nobody"], exclude_chats=["-100777"])
    import_export(write_export(tmp_path / "a.json", BORIS), store, progress=False)
    expected = [
        "[ingest] include_chats: 'Nobody' matches no chat in the store; check the spelling, "
        "or give the chat's id",
        "[ingest] exclude_chats: '-100777' matches no chat in the store; check the spelling, "
        "or give the chat's id",
    ]
    assert build_dataset(config, store, progress=False).notes == expected
    store.close()
    assert status_of(config)["chat_list_notes"] == expected


def test_cli_dataset_and_status_report_an_entry_that_matches_no_chat(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[paths]\ndata_dir = "d"\n[memory]\nenabled = false\n'
        '[ingest]\nexclude_chats = ["Secret Klub"]\n'
    )
    twin = [sys.executable, "-m", "twin", "--config", str(config)]
    export = write_export(tmp_path / "a.json", BORIS, SECRET_BEFORE)
    subprocess.run([*twin, "ingest", "export", str(export)], check=True, capture_output=True)
    note = (
        "note: [ingest] exclude_chats: 'Secret Klub' matches no chat in the store; check the "
        "spelling, or give the chat's id"
    )
    dataset = subprocess.run([*twin, "dataset"], capture_output=True, text=True, check=True)
    assert note in dataset.stdout.splitlines()
    status = subprocess.run([*twin, "status"], capture_output=True, text=True, check=True)
    assert note.replace("note: ", "note:     ") in status.stdout.splitlines()


def test_ids_match_as_the_bot_api_or_an_export_writes_them(tmp_path: Path) -> None:
    chats = [
        Chat(42, "Boris", "personal_chat"),
        Chat(-500, "Team", "private_group"),
        Chat(-1001823456789, "Crew", "private_supergroup"),
    ]
    for entry, expected in [
        ("42", {42}),
        ("-500", {-500}),
        ("500", {-500}),  # the bare id an export shows
        ("-1001823456789", {-1001823456789}),
        ("1823456789", {-1001823456789}),
        ("crew", {-1001823456789}),
    ]:
        selection = ChatSelection([], [entry])
        selection.pin(chats)
        assert {c.chat_id for c in chats if not selection.selects(c)} == expected, entry


def test_pins_are_kept_in_the_store(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    with open_store(path) as store, store.transaction():
        store.save_chat(Chat(-500, "Secret Club", "private_group"))
    with open_store(path) as store:
        selection = ChatSelection.load(store, [], ["Secret Club"])
        selection.pin(store.chats())
        selection.save(store)
    with open_store(path) as store:
        assert store.chat_pins() == {("exclude", "secret club"): {-500}}
        # A later name alone (say the store was rebuilt from a newer export): the pin holds.
        selection = ChatSelection([], ["Secret Club"], pins=store.chat_pins())
        assert not selection.selects(Chat(-500, "Book Club", "private_group"))


def test_an_include_name_that_takes_in_two_chats_is_reported() -> None:
    selection = ChatSelection(["Ann"], [])
    selection.pin([Chat(1, "Ann", "personal_chat"), Chat(2, "ann", "personal_chat")])
    assert selection.notes() == [
        "[ingest] include_chats: 'Ann' names 2 chats (1, 2), all used; give an id to use only one"
    ]
