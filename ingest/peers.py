"""Chat and sender ids as the store keys them: Telegram's *marked* peer ids.

Telegram numbers users, basic groups and channels (supergroups are channels) separately, so a
bare id says nothing on its own: user 123 and group 123 are two chats. The store keys both by
the id the Bot API uses (what Telethon's `utils.get_peer_id` gives):

    users (personal, bot and saved-messages chats)   id               123
    basic groups                                      -id              -123
    supergroups and channels                          -(10**12 + id)   -1000000000123

so a bot chat's id is the store's id, and a user never shares a row (or a memory scope) with
a group. Telegram Desktop exports write bare ids plus the chat's `type`, and senders as
"user123" / "channel123"; older exports write senders as plain numbers, which are users.

A chat whose type an export leaves out (or names in words twin does not know) cannot be
placed among those: it is keyed -(2**52 + id), apart from every real chat, so it never merges
with one. Ids that are already negative are taken as marked (tools built on the Bot API write
them so); a positive id of 2**52 or more is no Telegram id and is kept as it is.

WhatsApp chats (ingest.whatsapp) are chats of their own, never one of Telegram's: a WhatsApp
chat has no id, so it is keyed -(2**53 + h), h a 48-bit hash of the chat's name, below every
id above (`bare_id` keeps it as it is).
"""

from __future__ import annotations

import hashlib
from typing import Any

CHANNEL_OFFSET = 10**12
# Telegram's ids have at most 52 significant bits (the Bot API's promise).
UNTYPED_OFFSET = 2**52

# Below every Telegram key, untyped ones included (those lie above -2 * UNTYPED_OFFSET).
WHATSAPP_OFFSET = 2 * UNTYPED_OFFSET

USER_CHAT_TYPES = frozenset({"personal_chat", "bot_chat", "saved_messages"})
BASIC_GROUP_TYPES = frozenset({"private_group"})
CHANNEL_CHAT_TYPES = frozenset(
    {"private_supergroup", "public_supergroup", "private_channel", "public_channel"}
)
# The chats where several people talk (channels are one voice): a reply there answers one of
# them, and the dataset, the memory eval and the bot treat its turns alike.
GROUP_TYPES = frozenset({"private_group", "private_supergroup", "public_supergroup"})


def chat_key(bare_id: int, chat_type: str | None) -> int:
    """The store's id of an export's chat (`id` as the export writes it, and its `type`)."""
    if bare_id <= 0 or bare_id >= UNTYPED_OFFSET:
        return bare_id
    if chat_type in USER_CHAT_TYPES:
        return bare_id
    if chat_type in BASIC_GROUP_TYPES:
        return -bare_id
    if chat_type in CHANNEL_CHAT_TYPES:
        return -(CHANNEL_OFFSET + bare_id)
    return -(UNTYPED_OFFSET + bare_id)


def whatsapp_chat_id(chat_name: str) -> int:
    """The store's id of a WhatsApp chat, from its name: the same chat exported again (a
    later, longer export included) lands in the same chat, and never in a Telegram one."""
    digest = hashlib.blake2b(f"whatsapp|{chat_name}".encode(), digest_size=6).digest()
    return -(WHATSAPP_OFFSET + int.from_bytes(digest, "big"))


def bare_id(chat_id: int) -> int:
    """The id an export writes for the store's `chat_id` (for matching config entries)."""
    if chat_id >= 0 or chat_id <= -2 * UNTYPED_OFFSET:
        return chat_id
    if chat_id <= -UNTYPED_OFFSET:
        return -chat_id - UNTYPED_OFFSET
    if chat_id < -CHANNEL_OFFSET:
        return -chat_id - CHANNEL_OFFSET
    return -chat_id


class Unreadable:
    """A sender id that is there but is no id ("userabc"): the sender is unknown."""


UNREADABLE = Unreadable()


def sender_key(value: Any) -> int | Unreadable | None:
    """An export's `from_id` / `actor_id` as a marked id; None when there is none.

    Numbers are users (older exports); "user123" a user, "channel123" a channel or a
    supergroup speaking as itself, "chat123" a basic group.
    """
    if type(value) is str:
        if value.startswith("user"):
            number = _digits(value[4:])
            return number if number is not None else UNREADABLE
        if value.startswith("channel"):
            number = _digits(value[7:])
            return -(CHANNEL_OFFSET + number) if number is not None else UNREADABLE
        if value.startswith("chat"):
            number = _digits(value[4:])
            return -number if number is not None else UNREADABLE
        return None if value == "" else UNREADABLE
    if value is None:
        return None
    if type(value) is int:
        return value if 0 < abs(value) < UNTYPED_OFFSET else UNREADABLE
    return UNREADABLE  # true, false, a fraction, a list: no id


def _digits(text: str) -> int | None:
    """A Telegram id written in digits alone, else None."""
    if not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if 0 < number < UNTYPED_OFFSET else None
