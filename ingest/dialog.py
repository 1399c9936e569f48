"""Stored messages as conversations: what each message contributes (`said_of`), and a chat's
history cut into conversations of merged turns by twin.core.conversation's rules (the rules
the bot serves with). The dataset and the memory index both read history through here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ingest.store import Message, Owner
from twin.core.conversation import (
    OWNER,
    Said,
    Turn,
    TurnRules,
    build_sessions,
    media_placeholder,
    spoken,
)


@dataclass
class Conversation:
    chat_id: int
    turns: list[Turn]

    @property
    def key(self) -> str:
        return f"{self.chat_id}:{self.turns[0].first_id}"


def build_conversations(
    messages: Iterable[Message], owner: Owner, rules: TurnRules
) -> Iterator[Conversation]:
    """A chat's stored messages (in time order) as conversations of merged turns."""
    chat_id = 0

    def said() -> Iterator[Said]:
        nonlocal chat_id
        for message in messages:
            chat_id = message.chat_id
            item = said_of(message, owner)
            if item is not None:
                yield item

    for turns in build_sessions(said(), rules):
        yield Conversation(chat_id, turns)


def said_of(message: Message, owner: Owner) -> Said | None:
    """What a stored message contributes to a conversation; None when it is not dialog."""
    if message.kind != "message":
        return None
    text = message.text.strip()
    if owner.wrote(message):
        # Only the owner's own words teach the twin: not what they forwarded, not media. What
        # they said in a voice message is theirs too, and is taught unmarked: the twin answers
        # in text, and should not learn to write "[voice message]" before its words.
        if message.forwarded_from or not text:
            return None
        return Said(OWNER, owner.name or "", text, message.date, message.message_id)
    if message.spoken and text:
        text = spoken(message.media_type or "voice_message", text)
    elif not text:
        if message.media_type is None:
            return None
        text = media_placeholder(message.media_type)
    return Said(
        speaker_key(message.sender_id, message.sender_name),
        message.sender_name or "Deleted Account",
        text,
        message.date,
        message.message_id,
    )


def speaker_key(user_id: int | None, name: str | None) -> str:
    """How a speaker is told apart: the id where there is one (two Anns stay two people)."""
    return str(user_id) if user_id is not None else f"name:{name}"
