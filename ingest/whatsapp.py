"""Import a WhatsApp "Export chat" file into the store: the chat's .txt, or the .zip WhatsApp
writes with media (the text is `_chat.txt` from iOS, `WhatsApp Chat with X.txt` from Android).

The parser is twin's own. chat-miner (MIT) has the nearest one, but it is an analytics package
that pulls in pandas, polars, matplotlib and wordcloud; it joins a multi-line message into one
line, keeps "<Media omitted>" and iOS's WhatsApp lines as text, and opens no .zip: it drops
what twin needs.

How an export reads:
- an entry starts with a dated line: "31/12/2023, 23:59 - Ann: text" (Android) or
  "[31/12/2023, 23:59:59] Ann: text" (iOS); the lines up to the next dated line are the rest
  of its text, kept whole. The first line that is not blank must be dated, or the file is no
  export;
- WhatsApp's own lines are dropped and counted: a dated line without "Sender: " (created group,
  added, left, the encryption notice...), the encryption notice and the message timer where a
  sender is written before them, and on iOS any text WhatsApp marks with U+200E that is no
  media; deleted messages are dropped and counted too;
- media become Telegram Desktop's media types, so the twin sees the placeholders it sees for
  Telegram; a voice note whose file is in the .zip becomes its transcript, if a transcriber
  is given;
- times are the phone's local time, with no zone: read as UTC, as ingest.export reads `date`;
- WhatsApp numbers nothing: a message's id is its time in seconds * 1000 plus its place among
  the file's entries of that same time, so a later, longer export of the chat gives the same
  messages the same ids and adds only the new ones (WhatsApp cuts a long export at its oldest
  end: where a later one starts inside a minute, that minute's first messages may be stored
  twice).
Nobody has an id: the owner is who `--me` names, stored as the store's owner (one person
across Telegram and WhatsApp), everyone else by name. The whole import is one transaction:
a file that fails halfway leaves the store as it was.
"""

from __future__ import annotations

import contextlib
import re
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import NamedTuple

from tqdm import tqdm

from ingest.peers import whatsapp_chat_id
from ingest.store import Chat, Message, Owner, Store
from twin.core.errors import TwinError
from twin.core.files import file_sha256

# A voice note's sound as words: given the file's bytes and its name in the zip, the transcript,
# '' when it holds no speech, None when it could not be read or is too long.
Transcribe = Callable[[bytes, str], str | None]

# The invisible marks iOS and Android write around names, numbers and WhatsApp's own words
# (direction marks and embeddings, isolates, a BOM). U+200E (left-to-right mark) goes last: on
# iOS it first tells WhatsApp's words ("‎image omitted") from the sender's.
_MARKS = re.compile("[\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_LRM = "\u200e"

# One entry's first line. Android: "12/31/23, 11:59 PM - Ann: hi"; iOS: "[31.12.23, 23:59:59]
# Ann: hi". The clock's AM/PM comes in English, Spanish ("p. m.") or German ("nachm."), after a
# space, a narrow no-break space (newer exports) or, in some converted files, an underscore.
_ENTRY = re.compile(
    r"""
    (?P<bracket>\[)?
    (?P<a>\d{1,4}) (?P<sep>[./-]) (?P<b>\d{1,2}) (?P=sep) (?P<c>\d{1,4})
    ,?\s+
    (?P<hour>\d{1,2}) [:.] (?P<minute>\d{2}) (?: [:.] (?P<second>\d{2}) )?
    (?: [\s_]* (?P<ampm> [ap]\.?\s?m\.? | vorm\. | nachm\. ) )?
    (?(bracket) \]\s* | \s[-–]\s )
    (?P<rest>.*)
    """,
    re.VERBOSE | re.IGNORECASE,
)
_ENGLISH_CLOCK = re.compile(r"[ap]m", re.IGNORECASE)
# A sender is the text before the first ": ". A system line with a colon in it (a subject
# changed to "Re: lunch") would pass for one, but a name never holds quotes and a subject does.
_QUOTES = frozenset('"“”„«»')
# "~ Ann": someone not in the owner's contacts, by the name they gave themselves.
_NOT_A_CONTACT = re.compile(r"^~\s*")

# WhatsApp's own words even where a sender is written before them (iOS writes the chat's name).
_WHATSAPP_WORDS = re.compile(
    "|".join(
        (
            r"Messages and calls are end-to-end encrypted",
            r"Messages to this (?:group|chat) are now secured with end-to-end encryption",
            r"Messages you send to this (?:group|chat) are now secured",
            r"Сообщения и звонки защищены сквозным шифрованием",
            r"Nachrichten und Anrufe sind Ende-zu-Ende-verschlüsselt",
            r"Los mensajes y las llamadas están cifrados de extremo a extremo",
            r"As mensagens e as chamadas são protegidas com a criptografia de ponta a ponta",
            r"Les messages et les appels sont chiffrés de bout en bout",
            r"I messaggi e le chiamate sono crittografati end-to-end",
            r"[^\n]{1,80}? (?:updated the message timer|turned (?:on|off) disappearing messages)\.",
            r"Waiting for this message\. This may take a while\.",
        )
    )
)
_DELETED = frozenset(
    text.casefold()
    for text in (
        "This message was deleted",
        "You deleted this message",
        "Это сообщение удалено",
        "Вы удалили это сообщение",
        "Diese Nachricht wurde gelöscht",
        "Du hast diese Nachricht gelöscht",
        "Se eliminó este mensaje",
        "Eliminaste este mensaje",
        "Esta mensagem foi apagada",
        "Você apagou esta mensagem",
        "Ce message a été supprimé",
        "Vous avez supprimé ce message",
        "Questo messaggio è stato eliminato",
        "Hai eliminato questo messaggio",
    )
)
_EDITED = re.compile(
    r"\s*<(?:This message was edited|Diese Nachricht wurde bearbeitet|Se editó este mensaje\.?"
    r"|Сообщение изменено|Это сообщение было изменено)>$"
)

# Media whose file the export left out, by the words that stand for it (case-folded). Android
# writes one line for every kind of media; iOS names the kind. iOS writes "audio omitted" for
# voice notes and audio files alike: voice notes are most of them.
_OMITTED = {
    text.casefold(): media_type
    for media_type, texts in {
        "file": (
            "<Media omitted>",
            "<Без медиафайлов>",
            "<Medien ausgeschlossen>",
            "<Medien weggelassen>",
            "<Multimedia omitido>",
            "<Archivo multimedia omitido>",
            "<Mídia oculta>",
            "<Médias omis>",
            "<Media omessi>",
            "document omitted",
            "документ отсутствует",
            "Dokument weggelassen",
            "documento omitido",
        ),
        "photo": ("image omitted", "изображение отсутствует", "Bild weggelassen", "imagen omitida"),
        "video_file": ("video omitted", "видео отсутствует", "Video weggelassen", "video omitido"),
        "voice_message": (
            "audio omitted",
            "аудио отсутствует",
            "аудиофайл отсутствует",
            "Audio weggelassen",
            "audio omitido",
        ),
        "sticker": (
            "sticker omitted",
            "стикер отсутствует",
            "Sticker weggelassen",
            "sticker omitido",
        ),
        "animation": ("GIF omitted", "GIF отсутствует", "GIF weggelassen", "GIF omitido"),
        "contact": (
            "Contact card omitted",
            "карточка контакта отсутствует",
            "Kontaktkarte ausgelassen",
            "Kontaktkarte weggelassen",
            "tarjeta de contacto omitida",
        ),
        "video_message": ("video note omitted",),
    }.items()
    for text in texts
}
# iOS names a document before its words: "report.pdf • 3 pages document omitted".
_DOCUMENT_OMITTED = tuple(text for text, kind in _OMITTED.items() if text.startswith("doc"))
_ATTACHED_IOS = re.compile(r"<attached: (?P<file>[^>]+)>\s*(?P<caption>.*)")
_ATTACHED_ANDROID = re.compile(
    r"(?P<file>.+?\.\w{1,5}) \((?:file attached|Datei angehängt|файл добавлен|archivo adjunto"
    r"|arquivo anexado|fichier joint|file allegato)\)\s*(?P<caption>.*)",
    re.IGNORECASE,
)
_LOCATION = re.compile(
    r"(?:location|standort|местоположение|геопозиция|ubicación|localização|localisation"
    r"|posizione): https?://\S+|live location shared",
    re.IGNORECASE,
)
# Android writes a view-once photo or video as "null": media twin has no file of.
_VIEW_ONCE = "null"
# An attachment's kind by the name WhatsApp gives its file: Android "IMG-20230101-WA0001.jpg",
# "PTT-…opus" (a voice note), "AUD-…" (an audio file); iOS "00000012-PHOTO-2023-01-01-….jpg",
# "00000003-AUDIO-….opus" (a voice note, as opus; other audio is m4a or mp3).
_KIND_BY_NAME = (
    (("PTT-",), (), "voice_message"),
    (("AUD-",), ("-AUDIO-",), "audio_file"),
    (("STK-",), ("-STICKER-",), "sticker"),
    (("GIF-",), ("-GIF-",), "animation"),
    (("IMG-",), ("-PHOTO-",), "photo"),
    (("VID-",), ("-VIDEO-",), "video_file"),
)
_KIND_BY_EXTENSION = {
    ".opus": "voice_message",
    ".jpg": "photo",
    ".jpeg": "photo",
    ".png": "photo",
    ".heic": "photo",
    ".mp4": "video_file",
    ".mov": "video_file",
    ".3gp": "video_file",
    ".mp3": "audio_file",
    ".m4a": "audio_file",
    ".aac": "audio_file",
    ".wav": "audio_file",
    ".ogg": "audio_file",
    ".webp": "sticker",
    ".gif": "animation",
    ".vcf": "contact",
}

# The chat's name in the export's file name: "WhatsApp Chat with Ann.txt" (Android),
# "WhatsApp Chat - Ann.zip" (iOS), and the same in other languages; " (1)" is a second download.
_CHAT_FILE_NAME = re.compile(
    r"(?:^|[ _])(?P<prefix>WhatsApp[ _]Chat[ _](?:with|mit|-)|Чат[ _]WhatsApp[ _]с"
    r"|Chat[ _]de[ _]WhatsApp[ _]con|Conversa[ _]do[ _]WhatsApp[ _]com"
    r"|Discussion[ _]WhatsApp[ _]avec|Chat[ _]WhatsApp[ _]con)[ _](?P<name>.+?)(?:[ _]\(\d+\))?$",
    re.IGNORECASE,
)
# What can go wrong reading a member of a zip: damage (bad CRC, a cut-off file), or a method or
# an encryption zipfile cannot read.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


@dataclass
class WhatsAppSummary:
    path: Path
    chat: str = ""
    chat_type: str = ""
    added: int = 0
    already_stored: int = 0  # in the store from an earlier export of the same chat
    system: int = 0
    deleted: int = 0
    transcribed: int = 0
    placeholders: int = 0  # voice notes kept as "[voice message]"
    seconds: float = 0.0
    owner: Owner | None = None
    unchanged: bool = False  # the very same file was imported before

    def line(self) -> str:
        if self.unchanged:
            return (
                f"imported {self.path.name} (WhatsApp): already imported (same file), "
                f"nothing added, {self.seconds:.1f} s"
            )
        skipped = f"{self.system} system lines, {self.deleted} deleted skipped"
        if self.already_stored:
            skipped += f", {self.already_stored} already stored"
        return (
            f"imported {self.chat} (WhatsApp): 1 chat, {self.added} messages added ({skipped}), "
            f"{self.transcribed} voice notes transcribed, {self.placeholders} kept as "
            f"placeholders, {self.seconds:.1f} s"
        )


def import_whatsapp(
    path: Path,
    store: Store,
    *,
    me: str,
    transcribe: Transcribe | None = None,
    progress: bool = True,
) -> WhatsAppSummary:
    """Import the chat exported at `path` (.txt or .zip) into `store` in one transaction; raise
    TwinError on a file that is no WhatsApp export or where `me` names no sender.

    `me` is the owner's name as the export writes it. Voice notes found in a .zip are
    transcribed with `transcribe`, before the store is locked for writing.
    """
    started = time.perf_counter()
    me = me.strip()
    if not me:
        raise TwinError(f"{path}: pass --me NAME, your name as the WhatsApp export writes it")
    if not path.is_file():
        raise TwinError(f"{path}: no such file")
    summary = WhatsAppSummary(path)
    digest = file_sha256(path)
    if store.was_imported(digest, me):
        summary.unchanged = True
        summary.owner = store.owner()
        summary.seconds = time.perf_counter() - started
        return summary
    with contextlib.ExitStack() as stack:
        archive = _open_zip(path)
        if archive is not None:
            stack.enter_context(archive)
        export = _read_export(path, archive)
        entries = _read_entries(export.where, export.text)
        name = _sender_named(export.where, me, entries)
        chat_name = _chat_name(export.file_names, name, entries)
        chat_id = whatsapp_chat_id(chat_name)
        senders = {entry.sender for entry in entries if entry.kind != "system"}
        chat_type = "personal_chat" if len(senders) <= 2 else "private_group"
        owner = store.owner() or Owner(None, name)
        _check_nobody_else_passes_for_the_owner(export.where, name, owner, senders)
        _number(entries)
        stored = {m.message_id for m in store.messages_of(chat_id)}
        # Only voice notes not stored yet (a longer export of a chat imported before holds
        # the earlier ones) are worth the time a transcription takes.
        voice_notes = [
            e
            for e in entries
            if e.kind == "message" and e.media_type == "voice_message" and e.id not in stored
        ]
        transcripts = _transcribe_voice_notes(
            voice_notes, export.media, archive, transcribe, progress
        )
    messages = _messages(chat_id, entries, name, owner, transcripts)
    summary.transcribed = len(transcripts)
    summary.placeholders = len(voice_notes) - summary.transcribed
    with store.transaction():
        store.save_chat(Chat(chat_id, chat_name, chat_type))
        if store.owner() is None:
            store.set_owner(owner)
        summary.added = store.add_messages(messages)
        store.record_import(digest, me, path, summary.added)
    summary.chat, summary.chat_type, summary.owner = chat_name, chat_type, owner
    summary.already_stored = len(messages) - summary.added
    summary.system = sum(1 for entry in entries if entry.kind == "system")
    summary.deleted = sum(1 for entry in entries if entry.kind == "deleted")
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass
class _Export:
    where: str  # how messages name the file: the path, and the chat text's name inside a zip
    file_names: list[str]  # where the chat's name may be read: the zip's, the text's
    text: str
    media: dict[str, zipfile.ZipInfo] = field(default_factory=dict)  # a zip's files by name


def _open_zip(path: Path) -> zipfile.ZipFile | None:
    """The export as a zip, or None for a text file."""
    with path.open("rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if not is_zip and path.suffix.lower() != ".zip":
        return None
    try:
        return zipfile.ZipFile(path)
    except _ZIP_ERRORS:
        raise TwinError(f"{path}: damaged zip, not readable; export the chat again") from None


def _read_export(path: Path, archive: zipfile.ZipFile | None) -> _Export:
    if archive is None:
        return _Export(str(path), [path.name], _decode(str(path), path.read_bytes()))
    files = [i for i in archive.infolist() if not i.is_dir() and "__MACOSX" not in i.filename]
    texts = [i for i in files if i.filename.lower().endswith(".txt")]
    named = [i for i in texts if _CHAT_FILE_NAME.search(PurePosixPath(i.filename).stem)]
    chosen = [i for i in texts if PurePosixPath(i.filename).name == "_chat.txt"] or named or texts
    if not chosen:
        raise TwinError(
            f"{path}: no chat text inside (_chat.txt or 'WhatsApp Chat with ….txt'); "
            "not a WhatsApp export"
        )
    if len(chosen) > 1:
        listed = ", ".join(repr(i.filename) for i in chosen[:5])
        raise TwinError(f"{path}: several chat texts inside ({listed}); unzip it and import one")
    (info,) = chosen
    where = f"{path} ({info.filename})"
    try:
        raw = archive.read(info)
    except _ZIP_ERRORS:
        raise TwinError(f"{where}: damaged zip, not readable; export the chat again") from None
    media = {PurePosixPath(i.filename).name: i for i in files if i is not info}
    names = [path.name, PurePosixPath(info.filename).name]
    return _Export(where, names, _decode(where, raw), media)


def _decode(where: str, raw: bytes) -> str:
    if b"\x00" in raw[:4096]:
        raise TwinError(f"{where}: binary file, not a WhatsApp chat export")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise TwinError(
            f"{where}: not UTF-8 text (byte {err.start:,}), not a WhatsApp chat export"
        ) from None
    if not _MARKS.sub("", text).replace(_LRM, "").strip():
        raise TwinError(f"{where}: empty file, not a WhatsApp chat export")
    return text


class _Stamp(NamedTuple):
    """An entry's date and time as written, before the day and the month are told apart."""

    bracket: bool  # iOS
    a: str
    sep: str
    b: str
    c: str
    hour: int
    minute: int
    second: int
    ampm: str | None

    @property
    def year_first(self) -> bool:
        return len(self.a) > 2

    @property
    def shape(self) -> tuple[bool, str, int]:
        return (self.bracket, self.sep, len(self.c))


@dataclass
class _Entry:
    """One dated entry of the export: a message, a deleted one, or WhatsApp's own line."""

    line: int
    stamp: _Stamp
    sender: str | None  # None: WhatsApp speaking
    text: str  # without invisible marks
    marked: bool  # iOS wrote U+200E before the text: WhatsApp's words (media, deleted, system)
    kind: str = "message"  # "message", "deleted" or "system"
    date: int = 0
    media_type: str | None = None
    media_file: str | None = None  # the attachment's name, where the export names one
    id: int = 0  # the stored message's id (`_number`)


def _read_entries(where: str, text: str) -> list[_Entry]:
    """The export's entries, dated and read (`_read`), in the file's order."""
    entries: list[_Entry] = []
    lines_of: list[list[str]] = []  # each entry's lines: its first's text, then the rest
    for number, raw_line in enumerate(text.split("\n"), 1):
        line = _MARKS.sub("", raw_line).rstrip("\r")
        match = _ENTRY.match(line.lstrip(_LRM))
        if match is None:
            if lines_of:
                lines_of[-1].append(line.replace(_LRM, ""))
            elif line.replace(_LRM, "").strip():
                raise TwinError(
                    f"{where}: not a WhatsApp chat export: line {number} is no dated message "
                    f"({_excerpt(line.replace(_LRM, ''))!r})"
                )
            continue
        sender, first = _sender_and_text(match["rest"])
        entries.append(_Entry(number, _stamp(match), sender, "", marked=first.startswith(_LRM)))
        lines_of.append([first.replace(_LRM, "")])
    day_first = _day_first_by_shape([entry.stamp for entry in entries])
    for entry, lines in zip(entries, lines_of, strict=True):
        entry.text = "\n".join(lines).strip()
        entry.date = _timestamp(where, entry, day_first)
        _read(entry)
    return entries


def _excerpt(line: str) -> str:
    line = line.strip()
    return line if len(line) <= 60 else line[:57] + "..."


def _stamp(match: re.Match[str]) -> _Stamp:
    return _Stamp(
        bracket=bool(match["bracket"]),
        a=match["a"],
        sep=match["sep"],
        b=match["b"],
        c=match["c"],
        hour=int(match["hour"]),
        minute=int(match["minute"]),
        second=int(match["second"] or 0),
        ampm=match["ampm"],
    )


def _sender_and_text(rest: str) -> tuple[str | None, str]:
    """ "Ann: hi" -> ("Ann", "hi"); a line with no sender (WhatsApp speaking) -> (None, line)."""
    colon = rest.find(": ")
    if colon > 0:
        sender, text = rest[:colon], rest[colon + 2 :]
    elif len(rest) > 1 and rest.endswith(":"):  # the text starts on the next line
        sender, text = rest[:-1], ""
    else:
        return None, rest
    sender = _NOT_A_CONTACT.sub("", sender.replace(_LRM, "").strip())
    if not sender or _QUOTES.intersection(sender):
        return None, rest
    return sender, text


def _day_first_by_shape(stamps: list[_Stamp]) -> dict[tuple[bool, str, int], bool]:
    """Whether dates of each shape (layout, separator, digits of the year) are day-first.

    A phone writes dates in its locale's order, and 1/2/23 says nothing of it: the order is
    decided once for all the dates of one shape in the file, from the data. A first field over
    12 means day-first, a second field over 12 month-first; when neither (or both) occurs,
    month-first if the clock is 12-hour with English AM/PM (the US, where that order is),
    else day-first (most of the world). Shapes are decided apart because a file can hold two
    (one joined from two exports, or written by another tool): 6/30/23 and 30/6/2023.
    Year-first dates (2023/12/31) are always year, month, day.
    """
    first: Counter[tuple[bool, str, int]] = Counter()
    second: Counter[tuple[bool, str, int]] = Counter()
    english: set[tuple[bool, str, int]] = set()
    for stamp in stamps:
        if stamp.year_first:
            continue
        shape = stamp.shape
        first[shape] = max(first[shape], int(stamp.a))
        second[shape] = max(second[shape], int(stamp.b))
        if stamp.ampm and _ENGLISH_CLOCK.fullmatch(stamp.ampm):
            english.add(shape)
    orders = {}
    for shape in first:
        if first[shape] > 12 >= second[shape]:
            orders[shape] = True
        elif second[shape] > 12 >= first[shape]:
            orders[shape] = False
        else:
            orders[shape] = shape not in english
    return orders


def _timestamp(where: str, entry: _Entry, day_first: dict[tuple[bool, str, int], bool]) -> int:
    """The entry's time in unix seconds, its wall clock read as UTC."""
    stamp = entry.stamp
    hour = stamp.hour
    if stamp.ampm:
        pm = stamp.ampm[0] in "pPnN"  # p.m., PM, nachm.
        if hour == 12:
            hour = 12 if pm else 0
        elif pm and hour < 12:
            hour += 12
    a, b, c = int(stamp.a), int(stamp.b), int(stamp.c)
    if stamp.year_first:
        candidates = [(a, b, c)] if len(stamp.c) <= 2 else []
    else:
        year = 2000 + c if len(stamp.c) == 2 else c
        day, month = (a, b) if day_first[stamp.shape] else (b, a)
        # A date the shape's order cannot read is read the other way (a file whose dates of
        # one shape disagree); a real export never needs it.
        candidates = [(year, month, day), (year, day, month)] if len(stamp.c) in (2, 4) else []
    for year, month, day in candidates:
        with contextlib.suppress(ValueError):
            moment = datetime(year, month, day, hour, stamp.minute, stamp.second, tzinfo=UTC)
            return int(moment.timestamp())
    raise TwinError(f"{where}: line {entry.line} has no valid date or time; export the chat again")


def _read(entry: _Entry) -> None:
    """Tell what the entry is: WhatsApp's line, a deleted message, media, or text."""
    text = entry.text
    if entry.sender is None or _WHATSAPP_WORDS.match(text):
        entry.kind = "system"
        return
    if text.rstrip(".").casefold() in _DELETED:
        entry.kind = "deleted"
        return
    first, _, more = text.partition("\n")
    caption = more
    if attached := _ATTACHED_IOS.fullmatch(first) or _ATTACHED_ANDROID.fullmatch(first):
        entry.media_file = attached["file"].strip()
        entry.media_type = _media_type_of_file(entry.media_file)
        caption = f"{attached['caption']}\n{more}"
    elif first.casefold() in _OMITTED:
        entry.media_type = _OMITTED[first.casefold()]
    elif first.casefold().endswith(_DOCUMENT_OMITTED):
        entry.media_type = "file"
    elif _LOCATION.fullmatch(first):
        entry.media_type = "location"
    elif text == _VIEW_ONCE:
        entry.media_type, caption = "file", ""
    elif entry.marked and entry.stamp.bracket:
        # iOS marks its own words; not media and not deleted, they are a system line.
        entry.kind = "system"
        return
    else:
        caption = text
    entry.text = _EDITED.sub("", caption.strip())


def _media_type_of_file(name: str) -> str:
    upper = PurePosixPath(name).name.upper()
    extension = PurePosixPath(upper).suffix.lower()
    if "-AUDIO-" in upper and extension == ".opus":
        return "voice_message"
    for prefixes, parts, media_type in _KIND_BY_NAME:
        if upper.startswith(prefixes) or any(part in upper for part in parts):
            return media_type
    return _KIND_BY_EXTENSION.get(extension, "file")


def _sender_named(where: str, me: str, entries: list[_Entry]) -> str:
    """`me` as the export spells it: exactly, else the one sender of that name in other case."""
    senders = Counter(entry.sender for entry in entries if entry.kind != "system")
    if me in senders:
        return me
    alike = [s for s in senders if s is not None and s.casefold() == me.casefold()]
    if len(alike) == 1:
        return alike[0]
    found = ", ".join(repr(s) for s, _ in senders.most_common(5))
    if len(senders) > 5:
        found += f" and {len(senders) - 5} more"
    raise TwinError(
        f"{where}: cannot tell which sender is you: no sender is named {me!r}; pass --me NAME "
        f"as the export writes your name (senders: {found or 'none'})"
    )


def _chat_name(file_names: list[str], me: str, entries: list[_Entry]) -> str:
    """The export's file name's chat name, else the one other sender's name, else the file's
    stem: what the chat's id is made of, so the same chat exported again finds itself."""
    for name in file_names:
        match = _CHAT_FILE_NAME.search(PurePosixPath(name).stem)
        if match:
            found = match["name"].strip()
            return found.replace("_", " ") if "_" in match["prefix"] else found
    others = {e.sender for e in entries if e.kind != "system" and e.sender not in (None, me)}
    if len(others) == 1:
        return str(others.pop())
    return PurePosixPath(file_names[0]).stem


def _check_nobody_else_passes_for_the_owner(
    where: str, me: str, owner: Owner, senders: set[str | None]
) -> None:
    """Everyone but the owner is stored by name alone, so someone who has the name the store
    knows the owner by would pass for the owner: their words would train the twin."""
    for sender in senders:
        if sender is not None and sender != me and owner.wrote_as(None, sender):
            raise TwinError(
                f"{where}: {sender!r} here has the name this store knows you by, but --me says "
                f"you are {me!r}: pass --me {sender!r} if that is you, else use another data_dir"
            )


def _number(entries: list[_Entry]) -> None:
    """Each entry's id: its time and its place among the file's entries of that time (deleted
    and system ones count, so a later export, where a message is deleted since, keeps the same
    places). Up to 1000 entries a second (60,000 a minute) before one meets the next time's
    ids: no one writes that fast."""
    places: Counter[int] = Counter()
    for entry in entries:
        entry.id = entry.date * 1000 + places[entry.date]
        places[entry.date] += 1


def _transcribe_voice_notes(
    voice_notes: list[_Entry],
    media: dict[str, zipfile.ZipInfo],
    archive: zipfile.ZipFile | None,
    transcribe: Transcribe | None,
    progress: bool,
) -> dict[int, str]:
    """The words of the voice notes whose file the zip holds, by entry id; a note that holds
    none, or could not be read, has no entry (its placeholder stays)."""
    if transcribe is None or archive is None:
        return {}
    found = [(e.id, media[e.media_file]) for e in voice_notes if e.media_file in media]
    transcripts: dict[int, str] = {}
    for entry_id, info in tqdm(
        found,
        desc="transcribing voice notes",
        unit="note",
        leave=False,
        disable=None if progress else True,
    ):
        try:
            sound = archive.read(info)
        except _ZIP_ERRORS:
            continue  # a damaged file: the placeholder stays
        words = (transcribe(sound, info.filename) or "").strip()
        if words:
            transcripts[entry_id] = words
    return transcripts


def _messages(
    chat_id: int, entries: list[_Entry], me: str, owner: Owner, transcripts: dict[int, str]
) -> list[Message]:
    """The entries to store: the owner's under the store's owner (`Owner.wrote` holds for
    them), the others by name; a transcribed voice note as its words, marked spoken."""
    messages = []
    for entry in entries:
        if entry.kind != "message":
            continue
        mine = entry.sender == me
        transcript = transcripts.get(entry.id)
        messages.append(
            Message(
                chat_id=chat_id,
                message_id=entry.id,
                date=entry.date,
                sender_id=owner.user_id if mine else None,
                sender_name=(owner.name or me) if mine else entry.sender,
                kind="message",
                media_type=entry.media_type,
                text=entry.text if transcript is None else transcript,
                spoken=transcript is not None,
            )
        )
    return messages
