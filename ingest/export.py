"""Import a Telegram Desktop export (`result.json`, "Machine-readable JSON") into the store.

Both shapes are handled: a single chat (top-level `name`/`type`/`id`/`messages`) and a
full-account export (`personal_information`, `chats.list[]`, `left_chats.list[]`). The file is
streamed with ijson, one message object at a time, because a heavy user's export is several GB:
memory stays flat whatever the file size. The whole import is one transaction, so a file that
turns out truncated or foreign halfway leaves the store exactly as it was.

Chats are keyed by Telegram's marked ids (ingest.peers), from the export's bare `id` and its
`type`. Files written by other tools vary: what cannot be stored is skipped and counted by
reason in the summary line, what is stored after a repair is counted too, and nothing is
merged silently:
- a message id repeated in one chat: the first is kept, the others skipped;
- a second chat with the id (and kind) of an earlier one in the same file: skipped whole;
- a sender id that is not a number after "user" / "channel": kept without the id (the
  name still names the sender);
- `date_unixtime` (UTC, the truth) missing, "0" or unusable: dated by `date` (local time,
  read as UTC); the two more than 14 hours apart (no time zone does that): skipped; a `date`
  that is no date (hour 25) with no `date_unixtime`: skipped;
- `text` and `text_entities` that disagree: `text` is kept (what every tool reads), counted;
  no `text` but entities: their text;
- "never edited" written as a 1970 (or any pre-Telegram) edit date: not edited.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ijson
from tqdm import tqdm

from ingest.export_message import (
    ENTITIES,
    SKIP_REPEATED_CHAT,
    SKIP_REPEATED_ID,
    message_from_export,
    parse_id,
)
from ingest.peers import chat_key
from ingest.store import Chat, Message, Owner, Store
from ingest.voice import SPOKEN_MEDIA, Voice
from twin.core.errors import TwinError
from twin.core.files import file_sha256

# Where chats live in each export shape; '' is the single-chat export's top level.
_CHAT_CONTAINERS = ("", "chats.list.item", "left_chats.list.item")
_FIELD_PREFIXES = {
    f"{container}.{key}" if container else key: (container, key)
    for container in _CHAT_CONTAINERS
    for key in ("name", "type", "id")
}
_MESSAGE_PREFIXES = {
    f"{container}.messages.item" if container else "messages.item": container
    for container in _CHAT_CONTAINERS
}
_CHAT_START_PREFIXES = {c for c in _CHAT_CONTAINERS if c}
# What must be a JSON array where present: a chat's messages, an account's chat lists.
_ARRAYS = frozenset(
    {
        "messages",
        "chats.list",
        "left_chats.list",
        "chats.list.item.messages",
        "left_chats.list.item.messages",
    }
)
_BATCH = 2000
# Real exports nest a few levels (a message's text entities are the deepest); a file nested
# thousands of levels deep is no export, and the paths of its open levels ("chats.list.item...",
# as _ExportReader._walk keeps them) take memory quadratic in its depth: refuse it at this depth,
# in bounded memory and time.
MAX_DEPTH = 64
# ijson's C backend turns a whole buffer into events before yielding the first. They are
# ijson.basic_parse's, with no path, so a buffer of '[' costs a small tuple a byte (1 MB for
# 16 KiB), never a path a level. 16 KiB parsed fastest: 2 KiB 7% slower, 64 KiB 30% slower
# (its events no longer fit the CPU's caches, presumably).
PARSE_BUFFER = 16 * 1024


@dataclass
class ImportSummary:
    path: Path
    chats: int = 0
    seen: int = 0
    added: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    repaired: Counter[str] = field(default_factory=Counter)  # stored after a repair
    seconds: float = 0.0
    owner: Owner | None = None
    unchanged: bool = False  # the very same file was imported before
    voice: str = ""  # what became of its voice messages (ingest.voice), '' when none

    def line(self) -> str:
        if self.unchanged:
            line = (
                f"imported {self.path.name}: already imported (same file), nothing added, "
                f"{self.seconds:.1f} s"
            )
            return f"{line}; {self.voice}" if self.voice else line
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        detail = detail or "none skipped"
        if self.repaired:
            detail += "; " + ", ".join(f"{n} {r}" for r, n in sorted(self.repaired.items()))
        rate = self.seen / self.seconds if self.seconds > 0 else 0.0
        line = (
            f"imported {self.path.name}: {self.chats} chats, {self.added} messages added"
            f" ({detail}), {self.seconds:.1f} s, {rate:,.0f} messages/s"
        )
        return f"{line}; {self.voice}" if self.voice else line


def import_export(
    path: Path,
    store: Store,
    *,
    me: str = "",
    progress: bool = True,
    voice: Callable[[Store], Voice] | None = None,
) -> ImportSummary:
    """Stream `path` into `store` in one transaction; raise TwinError on input that is no export.

    `me` names the owner (id or display name) and wins over anything the export says. With
    `voice` (ingest.voice.voice_for, given the store once the owner is known), the voice and
    round video messages whose sound the export holds are transcribed after the import, each
    in its own small transaction (a long transcription never holds the store), and those whose
    sound is not there wait for a later import of the same export.
    """
    path = _locate_result_json(path)
    _check_looks_like_json(path)
    started = time.perf_counter()
    summary = ImportSummary(path)
    # The same file again (the nightly retrain re-reads every listed export): hashing it is
    # a fraction of parsing it, and nothing in it can be new.
    digest = file_sha256(path)
    if store.was_imported(digest, me):
        summary.unchanged = True
        summary.owner = store.owner()
        summary.seconds = time.perf_counter() - started
        if voice is not None:
            summary.voice = transcribe_voice_files(voice(store), progress=progress)
        return summary
    with store.transaction(), path.open("rb") as raw:
        with tqdm(
            total=path.stat().st_size,
            desc=f"importing {path.name}",
            unit="B",
            unit_scale=True,
            leave=False,
            # None: show progress on a terminal only, never as noise in logs.
            disable=None if progress else True,
        ) as bar:
            reader = _ExportReader(path, store, summary)
            reader.read(_ShownReads(raw, bar.update), raw.tell)
        summary.owner = _resolve_owner(path, me, reader, store)
        store.set_owner(summary.owner)
        store.record_import(digest, me, path, summary.added)
    summary.seconds = time.perf_counter() - started  # the voice line has its own times
    if voice is not None:
        summary.voice = transcribe_voice_files(voice(store), progress=progress)
    return summary


def transcribe_voice_files(voice: Voice, *, progress: bool) -> str:
    """Transcribe the stored voice messages whose sound an export holds: the words take each
    placeholder's place. Returns the tally's line ('' when there were none)."""
    store = voice.store
    waiting = store.voice_files()
    for chat_id, message_id, path in tqdm(
        waiting,
        desc="transcribing voice messages",
        unit="file",
        leave=False,
        disable=None if progress and waiting else True,
    ):
        text = voice.heard(Path(path))
        if text is not None:
            with store.transaction():
                store.set_spoken(chat_id, message_id, text)
    return voice.summary()


def parse_me(me: str) -> Owner:
    """`--me` / `[identity] me`: "123", "user123" (as newer exports write it) or a display name."""
    me = me.strip()
    digits = me.removeprefix("user")
    if digits.isdigit():
        return Owner(user_id=int(digits))
    return Owner(user_id=None, name=me)


def _locate_result_json(path: Path) -> Path:
    if path.is_dir():
        candidate = path / "result.json"
        if not candidate.is_file():
            raise TwinError(
                f"{path}: folder has no result.json (export as 'Machine-readable JSON')"
            )
        return candidate
    if not path.is_file():
        raise TwinError(f"{path}: no such file")
    return path


def _check_looks_like_json(path: Path) -> None:
    """Fail fast, with a hint, on the usual wrong files before starting a transaction."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head.strip():
        raise TwinError(f"{path}: empty file, not a Telegram Desktop export")
    if b"\x00" in head:
        raise TwinError(f"{path}: binary file, not a Telegram Desktop export")
    first = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if first == b"<":
        raise TwinError(
            f"{path}: this is the HTML export; export again choosing 'Machine-readable JSON'"
        )
    if first != b"{":
        raise TwinError(f"{path}: not a Telegram Desktop export (expected a JSON object)")


class _ShownReads:
    """The export file as the parser reads it, moving the progress bar. It has `read` alone:
    ijson calls `readinto` where a file has one, and so passed tqdm.wrapattr's `read` by."""

    def __init__(self, raw: IO[bytes], advance: Callable[[int], object]) -> None:
        self.raw = raw
        self.advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.advance(len(data))
        return data


@dataclass
class _ChatState:
    """What is known of the chat being read; messages wait here only until its id and type
    are known (both come before the messages in Telegram Desktop's exports)."""

    container: str
    name: str | None = None
    type: str | None = None
    bare_id: int | None = None  # the `id` as the export writes it
    chat_id: int | None = None  # the store's key, once placed (ingest.peers)
    repeated: bool = False  # an earlier chat of this file has the same key: skipped
    position: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)
    # Message ids stored so far, ascending, to catch one repeated (exports list them in order,
    # so this is an append; 8 bytes a message, for this chat only).
    ids: array[int] = field(default_factory=lambda: array("q"))
    # Senders of personal chats, to tell the owner from the peer when nothing else does.
    senders: Counter[tuple[int | None, str | None]] = field(default_factory=Counter)


class _ExportReader:
    """Walks ijson's event stream; builds each message object alone and stores it in batches."""

    def __init__(self, path: Path, store: Store, summary: ImportSummary):
        self.path = path
        self.store = store
        self.summary = summary
        self.personal_information: dict[str, Any] = {}
        self.chat: _ChatState | None = None
        self.batch: list[Message] = []
        self.found_chats = False
        self.owner_candidates: Counter[tuple[int | None, str | None]] = Counter()
        self.names_by_id: dict[int, str] = {}
        self.all_senders: Counter[tuple[int | None, str | None]] = Counter()
        self.chat_keys: set[int] = set()  # the chats of this file so far
        self.repairs: Counter[str] = Counter()  # of the message in hand, counted if stored
        self.voice_files: list[tuple[int, int, str]] = []  # sounds beside the export, to hear
        self.folder = path.parent.resolve()

    def read(self, stream: _ShownReads, position: Callable[[], int]) -> None:
        """Walk the export; `position` says how far into the file the parser has read."""
        try:
            self._walk(ijson.basic_parse(stream, use_float=True, buf_size=PARSE_BUFFER))
        except ijson.JSONError:
            # ijson's own message quotes the bytes around the fault: message text, which
            # must not reach run records and admin reports. The offset is enough to act on.
            raise TwinError(
                f"{self.path}: truncated or malformed JSON (the parser stopped within the first "
                f"{position():,} bytes); export it again"
            ) from None
        except UnicodeDecodeError:
            raise TwinError(f"{self.path}: not UTF-8 text, not a Telegram Desktop export") from None
        except _TooDeep:
            raise TwinError(
                f"{self.path}: JSON nested more than {MAX_DEPTH} levels deep; "
                "not a Telegram Desktop export"
            ) from None
        if not self.found_chats:
            raise TwinError(
                f"{self.path}: not a Telegram Desktop export (no 'messages' or 'chats' key)"
            )

    def _walk(self, events: Iterator[tuple[str, Any]]) -> None:
        """Follow where in the document each event is (its path, as ijson.parse's prefix:
        "chats.list.item.name"); hand each message object to _build_object whole.

        The paths are kept here, not by ijson.parse: it computes one for every event, those
        inside messages too, which nothing reads (a third of the parser's time); here only the
        events outside messages pay for them.
        """
        # The open containers, outermost first: (path, path of its items: None for an object).
        open_: list[tuple[str, str | None]] = []
        at = ""  # the path of the next value: its key's in an object, the items' in a list
        for event, value in events:
            if event == "map_key":
                parent = open_[-1][0]
                at = f"{parent}.{value}" if parent else value
                continue
            if event == "start_map" and at in _MESSAGE_PREFIXES:
                self._take_message(_build_object(events, len(open_) + 1))
                continue
            if event == "end_map" or event == "end_array":
                prefix = open_.pop()[0]
                if open_ and open_[-1][1] is not None:
                    at = open_[-1][1]  # back in a list: the next value is its next item
            else:
                prefix = at
            if event == "start_map" or event == "start_array":
                items = None
                if event == "start_array":
                    items = f"{prefix}.item" if prefix else "item"
                open_.append((prefix, items))
                if len(open_) > MAX_DEPTH:
                    raise _TooDeep
                if items is not None:
                    at = items
            if prefix in _ARRAYS and event != "start_array" and event != "end_array":
                raise TwinError(
                    f"{self.path}: '{prefix}' is {_KINDS.get(event, 'not a list')}, not a "
                    "list; not a Telegram Desktop export"
                )
            if event == "start_map":
                if prefix in _CHAT_START_PREFIXES:
                    self._start_chat(prefix)
            elif event == "end_map" and prefix in _CHAT_START_PREFIXES:
                self._finish_chat()
            elif prefix in _FIELD_PREFIXES and event in ("string", "number"):
                container, key = _FIELD_PREFIXES[prefix]
                self._set_chat_field(container, key, value)
            elif prefix == "messages" and event == "start_array":
                self.found_chats = True
                if self.chat is None:
                    self._start_chat("")
            elif prefix.startswith("personal_information.") and event in ("string", "number"):
                self.personal_information[prefix.partition(".")[2]] = value
        if self.chat is not None:  # a single-chat export ends with the document
            self._finish_chat()
        self._flush()

    def _start_chat(self, container: str) -> None:
        # A chat counts once it has a message list or sits in an account's chat list: a
        # top-level "name" alone (some other program's JSON) makes no export.
        self.found_chats = self.found_chats or bool(container)
        self.chat = _ChatState(container)

    def _set_chat_field(self, container: str, key: str, value: Any) -> None:
        if self.chat is None:
            if container:  # a stray field outside any chat: not ours to read
                return
            self._start_chat("")
        assert self.chat is not None
        if key == "id":
            self.chat.bare_id = parse_id(value)
        elif key == "name":
            self.chat.name = str(value)
        elif key == "type":
            self.chat.type = str(value)

    def _take_message(self, raw: dict[str, Any]) -> None:
        chat = self.chat
        if chat is None:
            return
        chat.position += 1
        raw.setdefault("id", chat.position)  # minimal exports number nothing: use file order
        if chat.chat_id is None:
            if chat.bare_id is None or chat.type is None:
                chat.pending.append(raw)
                return
            self._place(chat)
        self._store_message(chat, raw)

    def _place(self, chat: _ChatState) -> None:
        """Key the chat (by its id and type, else by what it says), then store what waited."""
        if chat.bare_id is None:
            chat.chat_id = _synthetic_chat_id(chat.name, chat.pending[:1])
        else:
            chat.chat_id = chat_key(chat.bare_id, chat.type)
        # Two chats of one file under one key are two chats a tool numbered alike, or one
        # chat twice: either way not to be merged.
        chat.repeated = chat.chat_id in self.chat_keys
        self.chat_keys.add(chat.chat_id)
        pending, chat.pending = chat.pending, []
        for raw in pending:
            self._store_message(chat, raw)

    def _finish_chat(self) -> None:
        chat = self.chat
        if chat is None:
            return
        if chat.chat_id is None:
            self._place(chat)
        self.chat = None
        self.all_senders.update(chat.senders)  # here, not a message at a time: in the same order
        if chat.repeated:
            return
        assert chat.chat_id is not None
        self.store.save_chat(Chat(chat.chat_id, chat.name, chat.type))
        self.summary.chats += 1
        if chat.type in (None, "personal_chat"):
            candidate = _owner_of_personal_chat(chat)
            if candidate is not None:
                self.owner_candidates[candidate] += 1

    def _store_message(self, chat: _ChatState, raw: dict[str, Any]) -> None:
        assert chat.chat_id is not None
        self.summary.seen += 1
        if chat.repeated:
            self.summary.skipped[SKIP_REPEATED_CHAT] += 1
            return
        repairs = self.repairs
        message, problem = message_from_export(chat.chat_id, raw, repairs)
        if message is None or _seen_before(chat.ids, message.message_id):
            self.summary.skipped[problem or SKIP_REPEATED_ID] += 1
            repairs.clear()
            return
        if repairs:
            self.summary.repaired.update(repairs)
            repairs.clear()
        if message.kind == "message":
            sender_id, name = message.sender_id, message.sender_name
            chat.senders[sender_id, name] += 1
            if sender_id is not None and name:
                self.names_by_id[sender_id] = name
        if message.media_type in SPOKEN_MEDIA and not message.text:
            sound = raw.get("file")
            # Exports made without media say "(File not included. ...)" instead of a path.
            if type(sound) is str and sound and not sound.startswith("("):
                where = (self.folder / sound).resolve()
                if where.is_relative_to(self.folder):  # an export's files are in its folder
                    self.voice_files.append((chat.chat_id, message.message_id, str(where)))
        batch = self.batch
        batch.append(message)
        if len(batch) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.voice_files:
            self.store.add_voice_files(self.voice_files)
            self.voice_files.clear()
        if self.batch:
            added = self.store.add_messages(self.batch)
            self.summary.added += added
            if len(self.batch) > added:
                self.summary.skipped["already stored"] += len(self.batch) - added
            self.batch.clear()


def _seen_before(ids: array[int], message_id: int) -> bool:
    """Whether `message_id` is in `ids` (kept ascending); adds it if not."""
    if not ids or message_id > ids[-1]:
        ids.append(message_id)
        return False
    at = bisect_left(ids, message_id)
    if at < len(ids) and ids[at] == message_id:
        return True
    ids.insert(at, message_id)  # out of order: rare, and then a shift, not a search
    return False


# Keys whose (often large) values twin never reads: skipped without building them.
_SKIPPED_KEYS = frozenset({"reactions", "inline_bot_buttons"})
_SCALARS = frozenset({"string", "number", "boolean", "null"})
_EVENTS = Iterator[tuple[str, Any]]  # ijson.basic_parse's: (event, value)
_NO_EVENT: tuple[str, Any] = ("", None)  # next()'s past the last event (ijson raises first)

# The builders below are the hot loop of the importer: ijson's generic ObjectBuilder costs two
# Python calls an event, these none. A key and its value are read together (at a message's
# top, and in its entities, nothing else follows a key), which halves the turns of the loop.
# Each is given the depth of the value it reads: nothing is built deeper than MAX_DEPTH.


def _build_object(events: _EVENTS, depth: int) -> dict[str, Any]:
    """Consume the events of one message object (its start_map already read; it lies `depth`
    levels deep) into a dict: its text entities as their text alone, the keys in
    _SKIPPED_KEYS stepped over without building."""
    message: dict[str, Any] = {}
    for event, key in events:
        if event == "end_map":
            return message
        event, value = next(events, _NO_EVENT)  # an object holds keys, each before its value
        if key in _SKIPPED_KEYS:
            if event == "start_map" or event == "start_array":
                _skip_container(events, depth + 1)
            continue
        if event == "start_map" or event == "start_array":
            build = _entities_text if key == ENTITIES else _build_container
            value = build(events, event, depth + 1)
        elif key == ENTITIES:
            value = ""  # no list of entities: no text from them
        message[key] = value
    raise ijson.IncompleteJSONError("file ends inside a message")


def _build_container(events: _EVENTS, first: str, depth: int) -> dict[str, Any] | list[Any]:
    """Consume the events of the object or list that `first` (its start event, already read)
    opens into it."""
    root: dict[str, Any] | list[Any] = {} if first == "start_map" else []
    if depth > MAX_DEPTH:
        raise _TooDeep
    stack: list[Any] = [root]
    top: Any = root  # the innermost open container
    key = ""
    for event, value in events:
        if event == "map_key":
            key = value
        elif event in _SCALARS:
            if type(top) is dict:
                top[key] = value
            else:
                top.append(value)
        elif event == "start_map" or event == "start_array":
            container: Any = {} if event == "start_map" else []
            if type(top) is dict:
                top[key] = container
            else:
                top.append(container)
            stack.append(container)
            top = container
            if depth + len(stack) - 1 > MAX_DEPTH:
                raise _TooDeep
        else:  # end_map / end_array
            stack.pop()
            if not stack:
                return root
            top = stack[-1]
    raise ijson.IncompleteJSONError("file ends inside a message")


def _skip_container(events: _EVENTS, depth: int) -> None:
    """Step over the rest of the object or list whose start event was just read."""
    if depth > MAX_DEPTH:
        raise _TooDeep
    level = 1
    for event, _value in events:
        if event == "start_map" or event == "start_array":
            level += 1
            if depth + level - 1 > MAX_DEPTH:
                raise _TooDeep
        elif event == "end_map" or event == "end_array":
            level -= 1
            if level == 0:
                return
    raise ijson.IncompleteJSONError("file ends inside a message")


def _entities_text(events: _EVENTS, first: str, depth: int) -> str:
    """Consume the value of "text_entities" (its start event already read) and return its
    entities' text joined, what `text` should read: each entity is an object whose "text" is
    a string. "" for anything else."""
    if first != "start_array":
        _skip_container(events, depth)
        return ""
    if depth > MAX_DEPTH:
        raise _TooDeep
    parts: list[str] = []
    for event, _value in events:  # the list's items
        if event == "end_array":
            return "".join(parts)
        if event == "start_array":
            _skip_container(events, depth + 1)
        elif event == "start_map":  # an entity
            if depth + 1 > MAX_DEPTH:
                raise _TooDeep
            for event, key in events:  # the entity's keys, read from the same stream
                if event == "end_map":
                    break
                event, value = next(events, _NO_EVENT)
                if event == "string":
                    if key == "text":
                        parts.append(value)
                elif event == "start_map" or event == "start_array":
                    _skip_container(events, depth + 2)
    raise ijson.IncompleteJSONError("file ends inside a message")


_KINDS = {
    "start_map": "an object",
    "string": "a string",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


class _TooDeep(Exception):
    pass


def _synthetic_chat_id(name: str | None, first: list[dict[str, Any]]) -> int:
    """A stable negative id for exports that give a chat none.

    Built from the chat name and its first message, so re-importing the same file maps to the
    same chat while two different nameless exports do not collide. Groups' marked ids are
    negative too, but one equals a 48-bit hash by chance only; ids made before chat ids were
    marked are kept by the store's migration, so these stay what they were.
    """
    head = first[0] if first else {}
    key = "|".join(
        str(x) for x in (name, head.get("date_unixtime"), head.get("date"), head.get("from"))
    )
    digest = hashlib.blake2b(key.encode(), digest_size=6).digest()
    return -(int.from_bytes(digest, "big") + 1)


def _owner_of_personal_chat(chat: _ChatState) -> tuple[int | None, str | None] | None:
    """In a personal chat the export's `name` is the peer; the one other sender is the owner.

    Display names drift (the chat says "Grace 🧤", her messages "Grace 🧤 💍"), so a sender
    whose name starts with the chat's name also counts as the peer.
    """
    if not chat.name or len(chat.senders) != 2:
        return None
    peers = [s for s in chat.senders if s[1] and _same_person(s[1], chat.name)]
    if len(peers) != 1:
        return None
    (owner,) = [s for s in chat.senders if s != peers[0]]
    return owner


def _check_the_store_owner_wrote_here(path: Path, owner: Owner, reader: _ExportReader) -> None:
    """A single-chat export imported into an existing store must be a chat of the store's
    owner: someone else's export would silently train the twin on another person's words."""
    senders = [s for s in reader.all_senders if s != (None, None)]
    if not senders:
        return  # an empty chat: nothing of anyone's
    if any(owner.wrote_as(sender_id, name) for sender_id, name in senders):
        return
    who = owner.name or f"user {owner.user_id}"
    raise TwinError(
        f"{path}: no message here is from {who}, whose history this store holds: it is someone "
        "else's chat. Use another data_dir for another person, or pass --me if you are in it "
        "under another name"
    )


def _same_person(sender: str, chat_name: str) -> bool:
    a, b = sender.casefold().strip(), chat_name.casefold().strip()
    return a == b or a.startswith(b) or b.startswith(a)


def _resolve_owner(path: Path, me: str, reader: _ExportReader, store: Store) -> Owner:
    """--me / [identity] me, else the export's own account, else the store's, else inference."""
    info = reader.personal_information
    phone = info.get("phone_number") or None
    if me:
        owner = parse_me(me)
        if owner.user_id is None:  # a name: use the id behind it where the export has one
            # Users only: a channel posting under the owner's name is not the owner.
            ids = {sid for sid, name in reader.all_senders if name == owner.name and (sid or 0) > 0}
            if len(ids) == 1:
                owner = Owner(ids.pop(), owner.name)
        name = owner.name or reader.names_by_id.get(owner.user_id or -1)
        return Owner(owner.user_id, name, phone)
    stored = store.owner()
    if info.get("user_id"):
        user_id = int(info["user_id"])
        if stored and stored.user_id is not None and stored.user_id != user_id:
            raise TwinError(
                f"{path}: this export is user {user_id}'s, but the store holds user "
                f"{stored.user_id}'s history; use another data_dir, or pass --me to switch owner"
            )
        name = " ".join(str(info[k]) for k in ("first_name", "last_name") if info.get(k))
        return Owner(user_id, name or reader.names_by_id.get(user_id), phone)
    if stored:
        _check_the_store_owner_wrote_here(path, stored, reader)
        return stored
    if reader.owner_candidates:
        (candidate, name), _ = reader.owner_candidates.most_common(1)[0]
        return Owner(candidate, name or (reader.names_by_id.get(candidate) if candidate else None))
    senders = ", ".join(
        repr(name) + (f" (id {sid})" if sid else "")
        for (sid, name), _ in reader.all_senders.most_common(5)
    )
    raise TwinError(
        f"{path}: cannot tell which sender is you; pass --me ID or --me NAME"
        f" (senders: {senders or 'none'})"
    )
