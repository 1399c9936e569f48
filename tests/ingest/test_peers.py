"""Marked peer ids: how the store keys chats and senders (ingest.peers)."""

from __future__ import annotations

import pytest
from telethon import utils
from telethon.tl import types as tl

from ingest.peers import UNREADABLE, bare_id, chat_key, sender_key


@pytest.mark.parametrize(
    ("exported", "kind", "key", "bare"),
    [
        (42, "personal_chat", 42, 42),
        (42, "bot_chat", 42, 42),
        (42, "saved_messages", 42, 42),
        (42, "private_group", -42, 42),
        (42, "private_supergroup", -1000000000042, 42),
        (42, "public_channel", -1000000000042, 42),
        (42, None, -(2**52 + 42), 42),  # no type: apart from every real chat
        (42, "some_new_kind", -(2**52 + 42), 42),
        (-1000000000042, "private_supergroup", -1000000000042, 42),  # already marked
        (-42, "private_supergroup", -42, 42),
        (2**52, "personal_chat", 2**52, 2**52),  # no Telegram id: kept as it is
    ],
)
def test_chat_keys_and_back(exported: int, kind: str | None, key: int, bare: int) -> None:
    assert chat_key(exported, kind) == key
    assert bare_id(key) == bare  # what a config entry written as an export's id matches


def test_chat_keys_are_telethons_marked_ids() -> None:
    user = tl.PeerUser(42)
    group = tl.PeerChat(42)
    channel = tl.PeerChannel(42)
    assert chat_key(42, "personal_chat") == utils.get_peer_id(user)
    assert chat_key(42, "private_group") == utils.get_peer_id(group)
    assert chat_key(42, "private_supergroup") == utils.get_peer_id(channel)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("user42", 42),
        ("channel42", -1000000000042),
        ("chat42", -42),
        (42, 42),  # older exports: a number is a user
        (None, None),
        ("", None),
        ("userabc", UNREADABLE),
        ("userid42", UNREADABLE),
        ("user", UNREADABLE),
        ("user²", UNREADABLE),
        ("user0", UNREADABLE),
        ("bot42", UNREADABLE),
        (True, UNREADABLE),
        (4.5, UNREADABLE),
        (2**60, UNREADABLE),
    ],
)
def test_sender_keys(value: object, key: object) -> None:
    assert sender_key(value) == key
