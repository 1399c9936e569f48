"""Which chats the owner wants used: `[ingest] include_chats` / `exclude_chats`, by id or name.

An entry is a chat id, as the Bot API writes it (-100... for a supergroup) or bare as an
export writes it, or a chat's name, case-insensitively. Ids are the safest form: names change.

A rename must never widen what the twin learns from or recalls, so a name entry
- is matched against every name the store has seen the chat under (`Store.chat_names`), not
  only the current one: a rename between two imports does not slip a chat past a list;
- pins the ids of the chats it matched the first time it matched any (`Store.chat_pins`).
  An include entry then means those chats and no other, whatever they are called later; an
  exclude entry keeps its pinned chats out and still keeps out any chat called by its name.
Id entries are pinned too, to know which entries ever matched a chat: an entry that never
matched one is reported by `twin dataset` and `twin status` (`ChatSelection.notes`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ingest.peers import bare_id
from ingest.store import Chat, Store

if TYPE_CHECKING:
    from twin.core.config import Config

INCLUDE, EXCLUDE = "include", "exclude"


@dataclass(frozen=True)
class _Entry:
    list: str  # INCLUDE or EXCLUDE
    text: str  # as written in the config
    key: str  # trimmed and case-folded: how names compare, and how pins are kept
    id: int | None  # the entry read as a chat id, if it is a number


def _entry(which: str, text: str) -> _Entry:
    key = text.strip().casefold()
    try:
        chat_id: int | None = int(key)
    except ValueError:
        chat_id = None
    return _Entry(which, text.strip(), key, chat_id)


class ChatSelection:
    """The include / exclude lists with what the store knows of names and pins.

    `pin(chats)` records the first matches of entries among `chats` (in memory; `save` writes
    them); call it with every chat at hand before asking about any of them.
    """

    def __init__(
        self,
        include: Sequence[str],
        exclude: Sequence[str],
        *,
        chat_types: Collection[str] | None = None,
        names: dict[int, set[str]] | None = None,
        pins: dict[tuple[str, str], set[int]] | None = None,
    ) -> None:
        self.include = [_entry(INCLUDE, text) for text in include if text.strip()]
        self.exclude = [_entry(EXCLUDE, text) for text in exclude if text.strip()]
        self.chat_types = chat_types
        self.names = {
            chat_id: {name.casefold() for name in chat_names}
            for chat_id, chat_names in (names or {}).items()
        }
        self.pins = {key: set(ids) for key, ids in (pins or {}).items()}
        self.new_pins: list[tuple[str, str, int]] = []

    @classmethod
    def load(
        cls,
        store: Store,
        include: Sequence[str],
        exclude: Sequence[str],
        chat_types: Collection[str] | None = None,
    ) -> ChatSelection:
        return cls(
            include,
            exclude,
            chat_types=chat_types,
            names=store.chat_names(),
            pins=store.chat_pins(),
        )

    # ---- pinning -------------------------------------------------------------------------

    def pin(self, chats: Iterable[Chat]) -> None:
        """Pin entries to the chats among `chats` they match: an include entry only when it
        has no pins yet (its first match), an exclude entry whenever it matches a new chat."""
        chats = list(chats)
        for entry in (*self.include, *self.exclude):
            pinned = self.pins.get((entry.list, entry.key), set())
            matched = [c.chat_id for c in chats if self._matches(entry, c, pinned)]
            # A pinned include entry matches only its pins and its id: it pins nothing new.
            new = [chat_id for chat_id in dict.fromkeys(matched) if chat_id not in pinned]
            if new:
                self.pins.setdefault((entry.list, entry.key), set()).update(new)
                self.new_pins += [(entry.list, entry.key, chat_id) for chat_id in new]

    def save(self, store: Store) -> None:
        """Write the pins made since loading (in a transaction of their own)."""
        if self.new_pins:
            with store.transaction():
                store.pin_chats(self.new_pins)
            self.new_pins = []

    # ---- questions -------------------------------------------------------------------------

    def selects(self, chat: Chat) -> bool:
        """True if `chat` passes the lists: exclusion wins, an empty include list means all."""
        if self.lists(chat, EXCLUDE):
            return False
        return not self.include or self.lists(chat, INCLUDE)

    def lists(self, chat: Chat, which: str) -> bool:
        """True if an entry of the `which` list (INCLUDE or EXCLUDE) means `chat`."""
        entries = self.include if which == INCLUDE else self.exclude
        return any(
            self._matches(entry, chat, self.pins.get((entry.list, entry.key), set()))
            for entry in entries
        )

    def why_unused(self, chat: Chat) -> str | None:
        """Why the dataset and the memory leave `chat` out (None: they use it)."""
        if not self.selects(chat):
            return "chats excluded by config"
        # Exports of a single chat may carry no type: such a chat is a conversation, so use it.
        types = self.chat_types
        if types is not None and chat.type is not None and chat.type not in types:
            return f"{chat.type} chats"
        return None

    def uses(self, chat: Chat) -> bool:
        return self.why_unused(chat) is None

    def notes(self) -> list[str]:
        """One line per entry the owner should look at: one that never matched a chat, an
        include name that took in more than one."""
        lines = []
        for entry in (*self.include, *self.exclude):
            pinned = self.pins.get((entry.list, entry.key), set())
            setting = f"[ingest] {entry.list}_chats"
            if not pinned:
                lines.append(
                    f"{setting}: {entry.text!r} matches no chat in the store; check the "
                    "spelling, or give the chat's id"
                )
            elif entry.list == INCLUDE and entry.id is None and len(pinned) > 1:
                ids = ", ".join(str(chat_id) for chat_id in sorted(pinned))
                lines.append(
                    f"{setting}: {entry.text!r} names {len(pinned)} chats ({ids}), all used; "
                    "give an id to use only one"
                )
        return lines

    def _matches(self, entry: _Entry, chat: Chat, pinned: set[int]) -> bool:
        if entry.id is not None and (
            chat.chat_id == entry.id or (entry.id > 0 and bare_id(chat.chat_id) == entry.id)
        ):
            return True
        if chat.chat_id in pinned:
            return True
        if entry.list == INCLUDE and pinned:
            return False  # a pinned include entry takes in no chat that merely has its name
        names = self.names.get(chat.chat_id, set())
        return entry.key in names or (chat.name is not None and entry.key == chat.name.casefold())


def chat_selection(store: Store, config: Config, *, save: bool = True) -> ChatSelection:
    """The config's selection over the store's chats, pins made (and, with `save`, kept)."""
    selection = ChatSelection.load(
        store,
        config.ingest.include_chats,
        config.ingest.exclude_chats,
        config.dataset.chat_types,
    )
    selection.pin(store.chats())
    if save:
        selection.save(store)
    return selection
