"""Write a sample persona's Telegram export (and its memory benchmark) from a dialogue script.

The bundled personas (`make_demo_export.py`: Mira Kestrel, English; `make_demo_export_ru.py`:
Аня Соколова, Russian) are a Telegram Desktop "Machine-readable JSON" full-account export
(`result.json` shape) generated from a short script. A `Persona` holds the people, the chats, the
script and a seed; `build` turns it into the export dict, deterministically (the same persona
always gives the same bytes); `memory_benchmark` resolves the persona's memory probes against it.

Script format, one conversation per `== chat MM-DD HH:MM` header (chat is a key of `chats`):
    [+DELAY] X: [tag ...]... text
- X is a speaker code of that chat (M is always the owner); DELAY like +40s, +12m overrides the
  automatic gap before that message. An indented line continues the line above it.
- tags: [sticker 😂] [photo WxH] [voice SECONDS] [fwd Source Name] [edit 2m] [re #K] [re -K]
  and, for service messages, [create_group A, B] [invite Name] [pin #K] [pin -K] [call SECONDS].
  #K is the K-th message of the conversation, -K the K-th message before this one.
  [mark NAME] names the message for the memory benchmark (`told_in_message_id`); it is not
  part of the export.
- inline entities: {link:URL} {email:x} {phone:x} {mention:@x} {hashtag:#x} {bold:x} {code:x}
  {bot_command:/x} {text_link:label|URL}.

Chats in `private_chats` share the account's message counter (ids increase, with gaps for chats
not in the export); every other chat numbers its own messages from `first_ids` (default 1).
Conversations of one chat must be more than an hour apart (`build` checks), so that each one is
a session of its own for the dataset builder.
"""

from __future__ import annotations

import calendar
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from ingest.peers import chat_key

NOT_INCLUDED = "(File not included. Change data exporting settings to download.)"
ABOUT = "Here is the data you requested. This is a sample export made for twin's demo."
OWNER_CODE = "M"
SESSION_GAP = timedelta(minutes=61)


@dataclass(frozen=True)
class Recall:
    """A fact the owner told in `chat` (at the message marked `mark`), asked about later there."""

    mark: str
    chat: str
    question: str
    expect: tuple[str, ...]


@dataclass(frozen=True)
class Leak:
    """A secret the owner told in one chat (at `mark`); `question` asks for it in `probe_chat`."""

    mark: str
    probe_chat: str
    question: str
    secret: tuple[str, ...]


@dataclass(frozen=True)
class Persona:
    owner: tuple[str, str]  # display name, from_id
    people: dict[str, tuple[str, str]]  # person key -> (display name, from_id)
    # chat key -> (name, type, id, {speaker code: person key}); M is the owner everywhere.
    chats: dict[str, tuple[str, str, int, dict[str, str]]]
    script: str
    seed: int
    personal_information: dict[str, object]
    private_chats: tuple[str, ...]  # chat keys sharing the account's message counter
    first_private_id: int = 1
    first_ids: dict[str, int] = field(default_factory=dict)  # other chats; default 1
    year: int = 2026
    recall: tuple[Recall, ...] = ()
    leak: tuple[Leak, ...] = ()
    profile_candidates: tuple[str, ...] = ()


@dataclass
class Msg:
    chat: str
    speaker: str  # person key, or "owner"
    date: datetime
    text: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    reply_to: Msg | None = None
    pin: Msg | None = None
    id: int = 0


@dataclass
class Built:
    export: dict[str, Any]
    messages: dict[str, list[Msg]]  # chat key -> its messages in time order, ids assigned
    marks: dict[str, Msg]  # [mark NAME] -> its message


_HEADER = re.compile(r"^== (\w+) (\d\d)-(\d\d) (\d\d):(\d\d)$")
_LINE = re.compile(r"^(?:\+(\d+)([sm]) )?([A-Z]): (.*)$")
_TAG = re.compile(r"^\[(\w+)(?: ([^\]]*))?\] ?")
_ENTITY = re.compile(r"\{(\w+):([^{}]*)\}")


def _delay(rng: random.Random, previous: Msg, speaker: str) -> int:
    """Seconds between two messages: owner bursts are seconds apart, replies take longer."""
    if speaker == previous.speaker:
        return rng.randint(2, 9) if speaker == "owner" else rng.randint(8, 40)
    if speaker == "owner":
        return rng.randint(15, 150) if rng.random() < 0.85 else rng.randint(150, 420)
    return rng.randint(20, 240)


def _logical_lines(script: str) -> list[str]:
    """Script lines, with indented continuation lines joined to the line they continue."""
    lines: list[str] = []
    for raw in script.strip().splitlines():
        if raw.startswith(" ") and raw.strip():
            lines[-1] += " " + raw.strip()
        elif raw.strip():
            lines.append(raw.strip())
    return lines


def parse_script(persona: Persona, rng: random.Random) -> dict[str, list[list[Msg]]]:
    conversations: dict[str, list[list[Msg]]] = {key: [] for key in persona.chats}
    current: list[Msg] = []
    chat = ""
    start = datetime(persona.year, 1, 1)
    for line in _logical_lines(persona.script):
        header = _HEADER.match(line)
        if header:
            chat, month, day, hour, minute = header.groups()
            start = datetime(
                persona.year, int(month), int(day), int(hour), int(minute), rng.randint(0, 59)
            )
            current = []
            conversations[chat].append(current)
            continue
        match = _LINE.match(line)
        if not match:
            raise ValueError(f"bad script line: {line!r}")
        amount, unit, code, rest = match.groups()
        speaker = "owner" if code == OWNER_CODE else persona.chats[chat][3][code]
        if not current:
            date = start
        elif amount:
            date = current[-1].date + timedelta(seconds=int(amount) * (60 if unit == "m" else 1))
        else:
            date = current[-1].date + timedelta(seconds=_delay(rng, current[-1], speaker))
        tags: dict[str, str] = {}
        while tag := _TAG.match(rest):
            tags[tag.group(1)] = tag.group(2) or ""
            rest = rest[tag.end() :]
        msg = Msg(chat, speaker, date, rest, tags)
        for key in ("re", "pin"):
            if key in tags:
                ref = tags[key]
                target = current[int(ref[1:]) - 1] if ref[0] == "#" else current[int(ref)]
                setattr(msg, "reply_to" if key == "re" else "pin", target)
        current.append(msg)
    return conversations


def _text_fields(text: str) -> tuple[str | list[object], list[dict[str, str]]]:
    """`text` (a string, or a list of strings and entity objects) and `text_entities`."""
    parts: list[object] = []
    entities: list[dict[str, str]] = []
    position = 0
    for match in _ENTITY.finditer(text):
        if match.start() > position:
            plain = text[position : match.start()]
            parts.append(plain)
            entities.append({"type": "plain", "text": plain})
        kind, value = match.groups()
        entity = {"type": kind, "text": value}
        if kind == "text_link":
            label, href = value.split("|")
            entity = {"type": kind, "text": label, "href": href}
        parts.append(entity)
        entities.append(dict(entity))
        position = match.end()
    if position < len(text):
        plain = text[position:]
        parts.append(plain)
        entities.append({"type": "plain", "text": plain})
    if not any(isinstance(part, dict) for part in parts):
        return text, entities
    return parts, entities


def plain_text(text: str) -> str:
    """A script line's text as it reads in the export, entities flattened to their text."""

    def entity_text(match: re.Match[str]) -> str:
        kind, value = match.groups()
        return value.split("|")[0] if kind == "text_link" else value

    return _ENTITY.sub(entity_text, text)


def _when(date: datetime) -> tuple[str, str]:
    return date.isoformat(timespec="seconds"), str(calendar.timegm(date.timetuple()))


def _render(persona: Persona, msg: Msg, rng: random.Random) -> dict[str, object]:
    name, from_id = persona.owner if msg.speaker == "owner" else persona.people[msg.speaker]
    date, unixtime = _when(msg.date)
    tags = msg.tags
    service = {"create_group", "invite", "pin", "call"} & tags.keys()
    if service:
        out: dict[str, object] = {"id": msg.id, "type": "service", "date": date}
        out["date_unixtime"] = unixtime
        out["actor"], out["actor_id"] = name, from_id
        if "create_group" in tags:
            out["action"] = "create_group"
            out["title"] = persona.chats[msg.chat][0]
            out["members"] = [m.strip() for m in tags["create_group"].split(",")]
        elif "invite" in tags:
            out["action"] = "invite_members"
            out["members"] = [tags["invite"]]
        elif "pin" in tags:
            assert msg.pin is not None
            out["action"] = "pin_message"
            out["message_id"] = msg.pin.id
        else:
            out["action"] = "phone_call"
            out["duration_seconds"] = int(tags["call"])
            out["discard_reason"] = "hangup"
        out["text"], out["text_entities"] = "", []
        return out
    out = {"id": msg.id, "type": "message", "date": date, "date_unixtime": unixtime}
    if "edit" in tags:
        amount, unit = int(tags["edit"][:-1]), tags["edit"][-1]
        edited = msg.date + timedelta(
            seconds=amount * (60 if unit == "m" else 1) + rng.randint(0, 40)
        )
        out["edited"], out["edited_unixtime"] = _when(edited)
    out["from"], out["from_id"] = name, from_id
    if "fwd" in tags:
        out["forwarded_from"] = tags["fwd"]
    if msg.reply_to is not None:
        out["reply_to_message_id"] = msg.reply_to.id
    if "photo" in tags:
        width, height = (int(v) for v in tags["photo"].split("x"))
        out["photo"] = NOT_INCLUDED
        out["photo_file_size"] = rng.randint(90_000, 420_000)
        out["width"], out["height"] = width, height
    elif "sticker" in tags:
        out["file"] = NOT_INCLUDED
        out["file_size"] = rng.randint(12_000, 48_000)
        out["thumbnail"] = NOT_INCLUDED
        out["thumbnail_file_size"] = rng.randint(3_000, 9_000)
        out["media_type"] = "sticker"
        out["sticker_emoji"] = tags["sticker"]
        out["width"], out["height"] = 512, 512
    elif "voice" in tags:
        out["file"] = NOT_INCLUDED
        out["file_size"] = rng.randint(30_000, 160_000)
        out["media_type"] = "voice_message"
        out["mime_type"] = "audio/ogg"
        out["duration_seconds"] = int(tags["voice"])
    out["text"], out["text_entities"] = _text_fields(msg.text)
    return out


def assign_ids(
    persona: Persona, conversations: dict[str, list[list[Msg]]], rng: random.Random
) -> None:
    """Private chats share the account's message counter (ids increase with gaps in each chat);
    groups and channels number their own messages."""
    private = sorted(
        (m for key in persona.private_chats for c in conversations[key] for m in c),
        key=lambda m: m.date,
    )
    next_id = persona.first_private_id
    for msg in private:
        msg.id = next_id
        next_id += 1 + (rng.randint(1, 6) if rng.random() < 0.15 else 0)  # chats not exported
    for key in persona.chats:
        if key in persona.private_chats:
            continue
        next_id = persona.first_ids.get(key, 1)
        for msg in sorted((m for c in conversations[key] for m in c), key=lambda m: m.date):
            msg.id = next_id
            next_id += 1


def build(persona: Persona) -> Built:
    rng = random.Random(persona.seed)
    conversations = parse_script(persona, rng)
    for key, convs in conversations.items():
        convs.sort(key=lambda c: c[0].date)
        for before, after in itertools.pairwise(convs):
            if after[0].date - before[-1].date < SESSION_GAP:
                raise ValueError(f"{key}: conversations at {after[0].date} run together")
    assign_ids(persona, conversations, rng)
    chats: list[dict[str, object]] = []
    last_dates: list[datetime] = []
    marks: dict[str, Msg] = {}
    by_chat: dict[str, list[Msg]] = {}
    for key, (name, kind, chat_id, _codes) in persona.chats.items():
        messages = by_chat[key] = [m for c in conversations[key] for m in c]
        for msg in messages:
            if "mark" in msg.tags:
                if msg.tags["mark"] in marks:
                    raise ValueError(f"mark {msg.tags['mark']!r} is used twice")
                marks[msg.tags["mark"]] = msg
        chats.append(
            {
                "name": name,
                "type": kind,
                "id": chat_id,
                "messages": [_render(persona, m, rng) for m in messages],
            }
        )
        last_dates.append(messages[-1].date)
    # Most recently active first, as Telegram Desktop lists them.
    chats = [
        chat
        for _, chat in sorted(
            zip(last_dates, chats, strict=True), key=lambda pair: pair[0], reverse=True
        )
    ]
    export = {
        "about": ABOUT,
        "personal_information": {
            "about": "This page shows your personal information.",
            **persona.personal_information,
        },
        "chats": {"about": "This page lists all chats from this export.", "list": chats},
    }
    return Built(export, by_chat, marks)


def memory_benchmark(persona: Persona, built: Built) -> dict[str, object]:
    """The memory probes, resolved to the export's chat and message ids, and checked.

    A recall fact is stated by the owner (an `expect` keyword in the marked message) in the
    chat it is asked in, and its keywords appear in no other chat; a secret is stated in one
    chat and appears nowhere in the chat probing it; no probe question appears in the export;
    every profile candidate is something the owner wrote.
    """
    # As the store keys them (a supergroup's -100... id), since the probes ask the store.
    chat_ids = {key: chat_key(chat[2], chat[1]) for key, chat in persona.chats.items()}
    texts = {
        key: [plain_text(m.text).lower() for m in messages]
        for key, messages in built.messages.items()
    }
    everything = [t for chat_texts in texts.values() for t in chat_texts]

    def told(mark: str, keywords: tuple[str, ...]) -> Msg:
        if mark not in built.marks:
            raise ValueError(f"no [mark {mark}] in the script")
        msg = built.marks[mark]
        if msg.speaker != "owner" or not any(k in plain_text(msg.text).lower() for k in keywords):
            raise ValueError(f"[mark {mark}] is not the owner stating one of {keywords}")
        return msg

    def absent(keywords: tuple[str, ...], chats: list[str], what: str) -> None:
        for key in chats:
            for text in texts[key]:
                if any(k in text for k in keywords):
                    raise ValueError(f"{what}: {keywords} also appear in {key}: {text!r}")

    def unseen(question: str) -> None:
        if any(question.lower() in text for text in everything):
            raise ValueError(f"probe question appears in the export: {question!r}")

    recall = []
    for fact in persona.recall:
        msg = told(fact.mark, fact.expect)
        if msg.chat != fact.chat:
            raise ValueError(f"[mark {fact.mark}] is in {msg.chat}, not {fact.chat}")
        absent(fact.expect, [k for k in texts if k != msg.chat], fact.mark)
        unseen(fact.question)
        recall.append(
            {
                "chat_id": chat_ids[fact.chat],
                "told_in_message_id": msg.id,
                "question": fact.question,
                "expect": list(fact.expect),
            }
        )
    leak = []
    for secret in persona.leak:
        msg = told(secret.mark, secret.secret)
        if msg.chat == secret.probe_chat:
            raise ValueError(f"leak probe {secret.mark} asks in the chat it was told in")
        absent(secret.secret, [secret.probe_chat], secret.mark)
        unseen(secret.question)
        leak.append(
            {
                "told_in_chat_id": chat_ids[msg.chat],
                "told_in_message_id": msg.id,
                "probe_chat_id": chat_ids[secret.probe_chat],
                "question": secret.question,
                "secret": list(secret.secret),
            }
        )
    owner_texts = [
        plain_text(m.text).lower()
        for messages in built.messages.values()
        for m in messages
        if m.speaker == "owner"
    ]
    for statement in persona.profile_candidates:
        if not any(statement in text for text in owner_texts):
            raise ValueError(f"profile candidate not written by the owner: {statement!r}")
    return {
        "persona": persona.owner[0],
        "recall": recall,
        "leak": leak,
        "profile_candidates": list(persona.profile_candidates),
    }


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def write_persona(persona: Persona, export_path: Path, memory_path: Path | None = None) -> Built:
    """Write the export (and, when `memory_path` is given, the memory benchmark)."""
    built = build(persona)
    memory = memory_benchmark(persona, built) if memory_path is not None else None
    write_json(export_path, built.export)
    if memory_path is not None:
        write_json(memory_path, memory)
    return built
