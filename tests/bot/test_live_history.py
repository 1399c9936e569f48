"""Live history (bot.live_history) on its own: changes reach the store in order, and a store
held by another process (an import, a retrain's ingest) loses none of them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bot.live_history import PERSONAL_CHAT, LiveHistory
from ingest.store import Chat, Message, Owner, open_store
from twin.core.config import IngestConfig

OWNER = Owner(42)
ANN = Chat(7, "Ann", PERSONAL_CHAT)


def said(message_id: int, text: str, sender: int = 7) -> Message:
    return Message(7, message_id, 1_800_000_000 + message_id, sender, None, "message", None, text)


def stored(path: Path) -> list[tuple[int, str]]:
    with open_store(path) as store:
        return [(m.message_id, m.text) for m in store.messages_of(7)]


@pytest.mark.anyio
async def test_a_busy_store_keeps_the_changes_waiting_in_order(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    open_store(path).close()
    added: list[int] = []
    live = LiveHistory(path, IngestConfig, lambda: added.append(1))
    await live.add(ANN, [said(1, "lunch?")], OWNER)
    assert stored(path) == [(1, "lunch?")] and added == [1]
    # Another process holds the store's write lock past the busy timeout.
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    await live.add(ANN, [said(2, "sure", sender=42)], OWNER)
    assert live.waiting == 1 and added == [1]
    assert stored(path) == [(1, "lunch?")]
    other.execute("ROLLBACK")
    other.close()
    # The next changes go after the one that waited, in one write.
    await live.edit(7, 2, "sure, at 1", 1_800_000_100)
    await live.delete(7, [1])
    await live.flush()
    assert live.waiting == 0
    assert stored(path) == [(2, "sure, at 1")]
    assert added == [1, 1]  # memory is told to catch up


@pytest.mark.anyio
async def test_excluded_chats_are_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "twin.db"
    live = LiveHistory(path, lambda: IngestConfig(exclude_chats=("ann",)), lambda: None)
    await live.add(ANN, [said(1, "lunch?")], OWNER)
    assert stored(path) == []
    with open_store(path) as store:  # the account became the store's owner all the same
        assert store.owner() == OWNER
