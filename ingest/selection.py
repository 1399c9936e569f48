"""Which chats the owner wants used: `[ingest] include_chats` / `exclude_chats`, by id or name."""

from __future__ import annotations

from collections.abc import Sequence

from ingest.store import Chat


def chat_is_selected(chat: Chat, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """True if `chat` passes the lists: exclusion wins, an empty include list means all chats.

    Entries match the chat id as written ("123456") or the chat name, case-insensitively,
    because users copy names from the app where capitalisation is easy to get wrong.
    """
    keys = {str(chat.chat_id)}
    if chat.name:
        keys.add(chat.name.casefold())
    wanted = {entry.strip().casefold() for entry in include}
    unwanted = {entry.strip().casefold() for entry in exclude}
    if keys & unwanted:
        return False
    return not wanted or bool(keys & wanted)
