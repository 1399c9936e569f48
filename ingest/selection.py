"""Which chats the owner wants used: `[ingest] include_chats` / `exclude_chats`, by id or name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ingest.store import Chat

if TYPE_CHECKING:
    from twin.core.config import Config


def chat_is_selected(chat: Chat, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """True if `chat` passes the lists: exclusion wins, an empty include list means all chats.

    Entries match the chat id as written ("123456") or the chat name, case-insensitively,
    because users copy names from the app where capitalisation is easy to get wrong.
    """
    if chat_is_listed(chat, exclude):
        return False
    return not include or chat_is_listed(chat, include)


def chat_is_listed(chat: Chat, entries: Sequence[str]) -> bool:
    """True if one of `entries` names `chat` by id or (case-insensitively) by name."""
    keys = {str(chat.chat_id)}
    if chat.name:
        keys.add(chat.name.casefold())
    return any(entry.strip().casefold() in keys for entry in entries)


def why_chat_unused(chat: Chat, config: Config) -> str | None:
    """Why the dataset and the memory leave `chat` out (None: they use it)."""
    if not chat_is_selected(chat, config.ingest.include_chats, config.ingest.exclude_chats):
        return "chats excluded by config"
    # Exports of a single chat may carry no type: such a chat is a conversation, so use it.
    if chat.type is not None and chat.type not in config.dataset.chat_types:
        return f"{chat.type} chats"
    return None


def chat_is_used(chat: Chat, config: Config) -> bool:
    return why_chat_unused(chat, config) is None
