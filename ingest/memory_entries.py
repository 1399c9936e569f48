"""What becomes an entry of the recall index (ingest.memory): the owner's messages worth
recalling, each with the message it answered and the dialog just before it, read from the
store in one pass per chat. Nothing here is masked or embedded yet; the index does that."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from ingest.dialog import said_of
from ingest.store import Message, Owner, Store

# An entry needs two different words: "ok", "lol", "да!!", "ok ok", ":)" and a lone emoji
# recall nothing, yet, being short, they rank high for any short query and would crowd
# real memories out of the five a search returns (15% and 22% of the demo owners' typed
# messages; the Russian one writes "го", "норм", "ахах" a lot).
MIN_DISTINCT_WORDS = 2
# The word-search context: the message answered plus this many dialog messages before the
# entry, if no older than this. On the demo probes 3 messages found "фикус ... борисом", 1-2
# did not; 15 or 60 minutes made no difference, the shorter keeps unrelated talk out.
CONTEXT_MESSAGES = 3
CONTEXT_SECONDS = 15 * 60
# An owner message that comes this long after the last message by someone else starts a new
# conversation: it answered nothing (the dataset's default session gap). A reply is always
# to its target, however old.
ANSWER_SECONDS = 60 * 60

_WORD_RE = re.compile(r"\w+")


@dataclass
class ChatScan:
    """One pass over a chat's stored messages, and what an earlier pass had read."""

    read_until: int | None  # the newest date an earlier pass read; None: never read
    messages: int = 0
    newest: int = 0
    too_short: int = 0


class PendingEntry(NamedTuple):
    """An entry read from the store, not yet masked or embedded."""

    message_id: int
    date: int
    text: str
    answered: str
    context: str


def entries_of(
    store: Store, chat_id: int, owner: Owner, known: set[int], scan: ChatScan
) -> Iterator[PendingEntry]:
    """A chat's owner messages not in `known` that are worth remembering, with what they
    answered and their context; `scan` counts what was read (a short message is counted
    once, when it is newer than what an earlier pass read)."""
    window: deque[tuple[int, str]] = deque(maxlen=CONTEXT_MESSAGES)  # (date, text)
    last_other, last_other_date = "", 0
    for message in store.messages_of(chat_id):
        scan.messages += 1
        scan.newest = max(scan.newest, message.date)
        said = said_of(message, owner)
        if said is None:
            continue
        mine = owner.wrote(message)
        if mine and message.message_id not in known:
            if _worth_remembering(said.text):
                fresh = message.date - last_other_date <= ANSWER_SECONDS
                answered = last_other if fresh else ""
                if message.reply_to is not None:
                    answered = _reply_target(store, message, owner) or answered
                recent = [text for date, text in window if message.date - date <= CONTEXT_SECONDS]
                context = "\n".join(t for t in dict.fromkeys([answered, *recent]) if t)
                yield PendingEntry(message.message_id, message.date, said.text, answered, context)
            elif scan.read_until is None or message.date > scan.read_until:
                scan.too_short += 1
        if not mine:
            last_other, last_other_date = said.text, message.date
        if message.text.strip():  # "[photo]" is no context worth searching by
            window.append((message.date, said.text))


def _reply_target(store: Store, message: Message, owner: Owner) -> str:
    row = store.conn.execute(
        f"SELECT {', '.join(Message._fields)} FROM messages WHERE chat_id = ? AND message_id = ?",
        (message.chat_id, message.reply_to),
    ).fetchone()
    if row is None:
        return ""
    target = said_of(Message._make(row), owner)
    return target.text if target is not None else ""


def _worth_remembering(text: str) -> bool:
    words = {word.casefold() for word in _WORD_RE.findall(text)}
    return len(words) >= MIN_DISTINCT_WORDS
