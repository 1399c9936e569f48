"""Importing WhatsApp "Export chat" files: real exports written by other projects, hand-made
ones for the locales and layouts those miss, a .zip with voice notes, and bad input."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.peers import bare_id
from ingest.store import Message, Owner, Store
from ingest.whatsapp import import_whatsapp
from tests.helpers import REPO
from twin.app.cli import main
from twin.core.config import config_from_dict
from twin.core.errors import TwinError

# Copies of ../shared/fixtures/telegram-exports/whatsapp (sources and licenses in SOURCES.md
# one folder up), already in the repository for the Telegram importer's "not an export" test.
SHARED = REPO / "tests" / "fixtures" / "telegram-exports" / "whatsapp"
CHAT_MINER_SENDERS = {"John Doe", "Jahn Doe", "John-John Doe", "John Doe 🤓", "🤓"}
# file -> (--me, messages stored, their senders, system lines, deleted, chat type). Counted by
# hand from the files: chat-history-manager's own test expects the same ten messages.
EXPECTED = {
    "chat-history-manager-rust__whatsapp-text_2023-10__WhatsApp_Chat_with_+123_45_6789.txt": (
        "Aaaaa Aaaaaaaaaaa",
        10,
        {"Aaaaa Aaaaaaaaaaa", "+123 45 6789"},
        3,  # the encryption notice, "is a contact", the message timer
        0,
        "personal_chat",
    ),
    # "John Doe:." (no space after the colon) is no "Sender: text": chat-miner skips it too.
    "chat-miner__test_ddmmyy_24hrs.txt": ("John Doe", 6, CHAT_MINER_SENDERS, 3, 0, "private_group"),
    "chat-miner__test_mmddyyyy_12hrs.txt": (
        "John Doe",
        6,
        CHAT_MINER_SENDERS,
        3,
        0,
        "private_group",
    ),
    "chat-miner__test_yyyymmdd_24hrs.txt": (
        "John Doe",
        6,
        CHAT_MINER_SENDERS,
        3,
        0,
        "private_group",
    ),
    "langchain-community__whatsapp_chat_ios.txt": (
        "Jungle Jane",
        11,
        {"Dr. Feather", "Jungle Jane"},
        1,
        0,
        "personal_chat",
    ),
    # "~ User 2" is User 2 (the tilde marks a name not in the contacts).
    "langchain-community__whatsapp_chat_mixed_formats.txt": (
        "User 1",
        9,
        {"James", "User name", "User name 2", "User 1", "User 2", "User 3"},
        0,
        1,
        "private_group",
    ),
}
# Words of WhatsApp's own lines in the shared files: none may be stored as a message.
SYSTEM_WORDS = ("end-to-end", "is a contact", "message timer", "created group", "were added")
INVISIBLE = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"

RUSSIAN_ANDROID = """\
31.12.2023, 23:50 - Сообщения и звонки защищены сквозным шифрованием. Никто за пределами \
этого чата, даже WhatsApp, не может их прочитать или прослушать. Нажмите, чтобы узнать подробнее.
31.12.2023, 23:51 - Аня: С наступающим!
Пусть всё сбудется
31.12.2023, 23:52 - Борис: <Без медиафайлов>
31.12.2023, 23:53 - Борис: Это сообщение удалено
31.12.2023, 23:58 - Аня: IMG-20231231-WA0007.jpg (файл добавлен)
ёлка
01.01.2024, 00:01 - Борис: Спасибо, и тебя!
"""

GERMAN_IOS = """\
[31.12.23, 23:59:59] Bernd: \u200eNachrichten und Anrufe sind Ende-zu-Ende-verschlüsselt. \
Niemand außerhalb dieses Chats kann sie lesen oder anhören, nicht einmal WhatsApp.
[02.01.24, 09:00:05] Anna: Frohes neues Jahr!
\u200e[02.01.24, 09:00:09] Bernd: \u200eBild weggelassen
[02.01.24, 09:00:09] Bernd: \u200eDiese Nachricht wurde gelöscht.
[02.01.24, 09:01:00] Bernd: \u200eDein Sicherheitscode für Bernd hat sich geändert.
[02.01.24, 09:02:00] Bernd: Danke, dir auch
"""

ENGLISH_IOS = """\
\u200e[12/31/23, 11:58:01\u202fPM] Ann Lee: \u200eMessages and calls are end-to-end encrypted. \
No one outside of this chat, not even WhatsApp, can read or listen to them.
[12/31/23, 11:58:30\u202fPM] \u202a+1 (555) 010-0199\u202c: hi \u200fthere
[12/31/23, 11:59:59\u202fPM] Ann Lee: happy new year\u200e <This message was edited>
[1/1/24, 12:00:01\u202fAM] Ann Lee: \u200e<attached: 00000003-PHOTO-2024-01-01-00-00-01.jpg>
\u200e[1/1/24, 12:00:02\u202fAM] \u202a+1 (555) 010-0199\u202c: \u200eaudio omitted
[1/1/24, 12:30:00\u202fPM] \u202a+1 (555) 010-0199\u202c: lunch?
"""

ANDROID_MEDIA = """\
1/2/24, 9:00 AM - Bob: IMG-20240102-WA0001.jpg (file attached)
look at this
1/2/24, 9:01 AM - Bob: VID-20240102-WA0002.mp4 (file attached)
1/2/24, 9:02 AM - Bob: PTT-20240102-WA0003.opus (file attached)
1/2/24, 9:03 AM - Bob: AUD-20240102-WA0004.mp3 (file attached)
1/2/24, 9:04 AM - Bob: STK-20240102-WA0005.webp (file attached)
1/2/24, 9:05 AM - Bob: Bob Smith.vcf (file attached)
1/2/24, 9:06 AM - Bob: report.pdf (file attached)
1/2/24, 9:07 AM - Bob: <Media omitted>
1/2/24, 9:08 AM - Bob: location: https://maps.google.com/?q=52.52,13.40
1/2/24, 9:09 AM - Bob: IMG-20240102-WA0010.jpg (Datei angehängt)
1/2/24, 9:10 AM - Bob: <Medien ausgeschlossen>
1/2/24, 9:11 AM - Ann: ok
"""
ANDROID_MEDIA_READ = [
    ("photo", "look at this"),
    ("video_file", ""),
    ("voice_message", ""),
    ("audio_file", ""),
    ("sticker", ""),
    ("contact", ""),
    ("file", ""),
    ("file", ""),
    ("location", ""),
    ("photo", ""),
    ("file", ""),
    (None, "ok"),
]

IOS_MEDIA = """\
[2/1/24, 9:00:00 AM] Bob: \u200eimage omitted
[2/1/24, 9:00:01 AM] Bob: \u200evideo omitted
[2/1/24, 9:00:02 AM] Bob: \u200eaudio omitted
[2/1/24, 9:00:03 AM] Bob: \u200esticker omitted
[2/1/24, 9:00:04 AM] Bob: \u200eGIF omitted
[2/1/24, 9:00:05 AM] Bob: \u200ereport.pdf \u2022 3 pages \u200edocument omitted
[2/1/24, 9:00:06 AM] Bob: \u200eContact card omitted
[2/1/24, 9:00:07 AM] Bob: \u200e<attached: 00000012-PHOTO-2024-02-01-09-00-07.jpg>
[2/1/24, 9:00:08 AM] Bob: \u200e<attached: 00000013-GIF-2024-02-01-09-00-08.mp4>
[2/1/24, 9:00:09 AM] Bob: \u200e<attached: 00000014-AUDIO-2024-02-01-09-00-09.opus>
[2/1/24, 9:00:10 AM] Bob: \u200eLocation: https://maps.google.com/?q=52.52,13.40
[2/1/24, 9:00:11 AM] Ann: \u200e<attached: 00000015-Ann.vcf>
"""
IOS_MEDIA_READ = [
    "photo",
    "video_file",
    "voice_message",
    "sticker",
    "animation",
    "file",
    "contact",
    "photo",
    "animation",
    "voice_message",
    "location",
    "contact",
]

# Ann (the owner) and Bob; the .zip below holds it as iOS writes it, with two voice notes.
IOS_VOICE_CHAT = """\
[1/1/24, 12:00:04\u202fAM] Bob: are you coming?
[1/1/24, 12:00:05\u202fAM] Bob: \u200e<attached: 00000003-AUDIO-2024-01-01-00-00-05.opus>
[1/1/24, 12:00:06\u202fAM] Ann: \u200e<attached: 00000004-AUDIO-2024-01-01-00-00-06.opus>
[1/1/24, 12:00:07\u202fAM] Bob: \u200e<attached: 00000005-AUDIO-2024-01-01-00-00-07.opus>
[1/1/24, 12:01:00\u202fAM] Ann: yes, at six
"""
SOUNDS = {
    "00000003-AUDIO-2024-01-01-00-00-05.opus": b"bob's voice",
    "00000004-AUDIO-2024-01-01-00-00-06.opus": b"ann's mumbling",
    # 00000005 is left out of the zip: its note stays a placeholder.
}
TRANSCRIPTS = {b"bob's voice": "see you at six", b"ann's mumbling": None}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def stored(store: Store) -> list[Message]:
    return [m for chat in store.chats() for m in store.messages_of(chat.chat_id)]


def utc(message: Message) -> datetime:
    return datetime.fromtimestamp(message.date, UTC)


def voice_zip(folder: Path, chat: str = IOS_VOICE_CHAT) -> Path:
    path = folder / "WhatsApp Chat - Bob.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("_chat.txt", chat)
        for name, sound in SOUNDS.items():
            archive.writestr(name, sound)
        archive.writestr("00000006-PHOTO-2024-01-01-00-02-00.jpg", b"\xff\xd8 not really")
    return path


def test_every_shared_export_is_listed_here() -> None:
    assert sorted(p.name for p in SHARED.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_shared_export_imports(name: str, store: Store) -> None:
    me, count, senders, system, deleted, chat_type = EXPECTED[name]
    summary = import_whatsapp(SHARED / name, store, me=me, progress=False)
    messages = stored(store)
    assert len(messages) == summary.added == count
    assert {m.sender_name for m in messages} == senders
    assert (summary.system, summary.deleted) == (system, deleted)
    assert [c.type for c in store.chats()] == [chat_type]
    for message in messages:
        assert not any(words in message.text for words in SYSTEM_WORDS), message
        assert not set(message.text + str(message.sender_name)) & set(INVISIBLE), message
        assert message.kind == "message" and not message.spoken
    assert summary.line().startswith(f"imported {summary.chat} (WhatsApp): 1 chat, {count} ")


def test_a_multi_line_message_is_kept_whole_and_a_caption_stays(store: Store) -> None:
    name = "chat-history-manager-rust__whatsapp-text_2023-10__WhatsApp_Chat_with_+123_45_6789.txt"
    summary = import_whatsapp(SHARED / name, store, me="Aaaaa Aaaaaaaaaaa", progress=False)
    messages = stored(store)
    assert messages[0].text == "hello there!\n\nthis is a\nmulti-line message!"
    # In the order written, though three share a minute.
    assert [m.text for m in messages[1:4]] == [
        "and these messages",
        "should not be reordered!",
        "should not be reordered indeed!",
    ]
    assert (messages[4].media_type, messages[4].text) == ("photo", "image comment")
    # The chat is named as the file names it (underscores for spaces, as this copy has).
    assert summary.chat == "+123 45 6789"


def test_day_and_month_order_is_read_from_the_dates(store: Store, tmp_path: Path) -> None:
    # The same chat written day-first, month-first and year-first: the same times.
    dates = []
    for name in (
        "chat-miner__test_ddmmyy_24hrs.txt",
        "chat-miner__test_mmddyyyy_12hrs.txt",
        "chat-miner__test_yyyymmdd_24hrs.txt",
    ):
        summary = import_whatsapp(SHARED / name, store, me="John Doe", progress=False)
        chat = next(c for c in store.chats() if c.name == summary.chat)
        dates.append([utc(m) for m in store.messages_of(chat.chat_id)])
    assert dates[0] == dates[1] == dates[2]
    assert dates[0][1] == datetime(2019, 1, 30, 20, 49, tzinfo=UTC)
    # 05/01 alone could be either; 13/01 only makes sense day-first, so 05/01 is 5 January.
    path = write(
        tmp_path,
        "WhatsApp Chat with Bob.txt",
        "05/01/2024, 10:00 - Bob: hi\n13/01/2024, 10:00 - Ann: hey\n",
    )
    import_whatsapp(path, store, me="Ann", progress=False)
    bob = next(c for c in store.chats() if c.name == "Bob")
    assert [utc(m).date().isoformat() for m in store.messages_of(bob.chat_id)] == [
        "2024-01-05",
        "2024-01-13",
    ]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Undecidable dates: English AM/PM is the US, month-first; a 24-hour clock day-first.
        ("01/02/2024, 10:00 AM - Ann: hi", "2024-01-02 10:00"),
        ("01/02/2024, 10:00 - Ann: hi", "2024-02-01 10:00"),
        ("12/31/23, 12:05 AM - Ann: hi", "2023-12-31 00:05"),
        ("12/31/23, 12:30 PM - Ann: hi", "2023-12-31 12:30"),
        ("12/31/23, 11:59\u202fPM - Ann: hi", "2023-12-31 23:59"),
        ("[31/12/2023, 11:59:58 p. m.] Ann: hi", "2023-12-31 23:59"),
        ("31.12.23, 8:15 nachm. - Ann: hi", "2023-12-31 20:15"),
        ("31.12.23, 8:15 vorm. - Ann: hi", "2023-12-31 08:15"),
        ("2023-12-31 23:59 - Ann: hi", "2023-12-31 23:59"),
        ("2023/12/31, 23:59 - Ann: hi", "2023-12-31 23:59"),
    ],
)
def test_12_and_24_hour_clocks(line: str, expected: str, store: Store, tmp_path: Path) -> None:
    import_whatsapp(write(tmp_path, "chat.txt", line + "\n"), store, me="Ann", progress=False)
    (message,) = stored(store)
    assert utc(message).strftime("%Y-%m-%d %H:%M") == expected


def test_invisible_marks_are_gone_from_names_and_text(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, "_chat.txt", ENGLISH_IOS)
    summary = import_whatsapp(path, store, me="Ann Lee", progress=False)
    messages = stored(store)
    assert [(m.sender_name, m.media_type, m.text) for m in messages] == [
        ("+1 (555) 010-0199", None, "hi there"),
        ("Ann Lee", None, "happy new year"),  # "<This message was edited>" is WhatsApp's
        ("Ann Lee", "photo", ""),
        ("+1 (555) 010-0199", "voice_message", ""),
        ("+1 (555) 010-0199", None, "lunch?"),
    ]
    assert summary.system == 1  # the encryption notice
    assert summary.chat == "+1 (555) 010-0199"  # the one other sender: `_chat.txt` says nothing
    assert utc(messages[2]) == datetime(2024, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_media_lines_become_placeholders_of_their_kind(store: Store, tmp_path: Path) -> None:
    import_whatsapp(
        write(tmp_path, "WhatsApp Chat with Bob.txt", ANDROID_MEDIA),
        store,
        me="Ann",
        progress=False,
    )
    assert [(m.media_type, m.text) for m in stored(store)] == ANDROID_MEDIA_READ
    ios = tmp_path / "ios"
    ios.mkdir()
    import_whatsapp(
        write(ios, "WhatsApp Chat - Bob.txt", IOS_MEDIA), store, me="Ann", progress=False
    )
    (chat,) = store.chats()  # the same chat, exported from another phone
    ios_messages = [m for m in store.messages_of(chat.chat_id) if m.date >= 1706745600]
    assert [m.media_type for m in ios_messages] == IOS_MEDIA_READ
    assert all(m.text == "" for m in ios_messages)


def test_russian_android(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, "Чат WhatsApp с Борис.txt", RUSSIAN_ANDROID)
    summary = import_whatsapp(path, store, me="Аня", progress=False)
    assert [(m.sender_name, m.media_type, m.text) for m in stored(store)] == [
        ("Аня", None, "С наступающим!\nПусть всё сбудется"),
        ("Борис", "file", ""),
        ("Аня", "photo", "ёлка"),
        ("Борис", None, "Спасибо, и тебя!"),
    ]
    assert (summary.chat, summary.system, summary.deleted) == ("Борис", 1, 1)
    assert summary.line().startswith(
        "imported Борис (WhatsApp): 1 chat, 4 messages added (1 system lines, 1 deleted skipped)"
    )


def test_german_ios(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, "WhatsApp Chat mit Bernd.txt", GERMAN_IOS)
    summary = import_whatsapp(path, store, me="Anna", progress=False)
    messages = stored(store)
    assert [(m.sender_name, m.media_type, m.text) for m in messages] == [
        ("Anna", None, "Frohes neues Jahr!"),
        ("Bernd", "photo", ""),
        ("Bernd", None, "Danke, dir auch"),
    ]
    # The notice and the security code are WhatsApp's words, though iOS writes a sender.
    assert (summary.chat, summary.system, summary.deleted) == ("Bernd", 2, 1)
    assert utc(messages[0]) == datetime(2024, 1, 2, 9, 0, 5, tzinfo=UTC)  # 2 January: day-first


def test_voice_notes_in_a_zip_are_transcribed_before_the_store_is_locked(
    store: Store, tmp_path: Path
) -> None:
    heard: list[str] = []

    def transcribe(sound: bytes, name: str) -> str | None:
        assert not store.conn.in_transaction  # slow work holds no write lock
        heard.append(name)
        return TRANSCRIPTS[sound]

    summary = import_whatsapp(
        voice_zip(tmp_path), store, me="Ann", transcribe=transcribe, progress=False
    )
    assert sorted(heard) == sorted(SOUNDS)
    messages = stored(store)
    assert [(m.sender_name, m.media_type, m.text, m.spoken) for m in messages] == [
        ("Bob", None, "are you coming?", False),
        ("Bob", "voice_message", "see you at six", True),
        ("Ann", "voice_message", "", False),  # the transcriber could not read it
        ("Bob", "voice_message", "", False),  # its file is not in the zip
        ("Ann", None, "yes, at six", False),
    ]
    assert (summary.chat, summary.transcribed, summary.placeholders) == ("Bob", 1, 2)
    assert "1 voice notes transcribed, 2 kept as placeholders" in summary.line()


def test_without_a_transcriber_voice_notes_are_placeholders(store: Store, tmp_path: Path) -> None:
    summary = import_whatsapp(voice_zip(tmp_path), store, me="Ann", progress=False)
    voice = [m for m in stored(store) if m.media_type == "voice_message"]
    assert [(m.text, m.spoken) for m in voice] == [("", False)] * 3
    assert (summary.transcribed, summary.placeholders) == (0, 3)


def test_reimport_adds_nothing_and_a_longer_export_only_what_is_new(
    store: Store, tmp_path: Path
) -> None:
    first = write(tmp_path, "WhatsApp Chat with Bob.txt", ANDROID_MEDIA)
    assert import_whatsapp(first, store, me="Ann", progress=False).added == 12
    again = import_whatsapp(first, store, me="Ann", progress=False)
    assert again.unchanged and again.added == 0
    assert again.line().startswith(
        "imported WhatsApp Chat with Bob.txt (WhatsApp): already imported (same file)"
    )
    # A later export of the chat: the same messages, a deleted one since, and new ones (one in
    # the minute the first export ended in).
    later = tmp_path / "later"
    later.mkdir()
    longer = ANDROID_MEDIA.replace("Bob: <Media omitted>", "Bob: This message was deleted")
    longer += "1/2/24, 9:11 AM - Bob: 👍\n1/3/24, 8:00 AM - Bob: morning\nhow are you?\n"
    summary = import_whatsapp(
        write(later, "WhatsApp Chat with Bob.txt", longer), store, me="Ann", progress=False
    )
    assert (summary.added, summary.already_stored, summary.deleted) == (2, 11, 1)
    assert len(store.chats()) == 1
    assert [m.text for m in stored(store)][-3:] == ["ok", "👍", "morning\nhow are you?"]
    assert "2 messages added (0 system lines, 1 deleted skipped, 11 already stored)" in (
        summary.line()
    )


def test_whatsapp_chats_never_share_an_id_with_telegram_chats(
    store: Store, exports: Path, tmp_path: Path
) -> None:
    import_export(
        exports / "chat-history-manager-rust__telegram_2020-01__result.json", store, progress=False
    )
    telegram = {c.chat_id for c in store.chats()}
    import_whatsapp(write(tmp_path, "WhatsApp Chat with Bob.txt", ANDROID_MEDIA), store, me="Ann")
    zipped = tmp_path / "zipped"
    zipped.mkdir()
    import_whatsapp(voice_zip(zipped), store, me="Ann", progress=False)
    whatsapp = {c.chat_id for c in store.chats()} - telegram
    assert len(whatsapp) == 1  # Bob's chat, as .txt from Android and as .zip from iOS
    (chat_id,) = whatsapp
    assert chat_id < -(2**53) < min(telegram)
    assert bare_id(chat_id) == chat_id  # config entries match it by this id as it is


def test_the_owner_of_an_empty_store_is_who_me_names(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, "WhatsApp Chat with Bob.txt", ANDROID_MEDIA)
    summary = import_whatsapp(path, store, me="ann", progress=False)  # case aside
    owner = store.owner()
    assert owner == summary.owner == Owner(None, "Ann")
    assert [owner.wrote(m) for m in stored(store)] == [False] * 11 + [True]


def test_the_owners_whatsapp_messages_are_the_telegram_owners(store: Store, tmp_path: Path) -> None:
    with store.transaction():
        store.set_owner(Owner(42, "Ann"))
    path = write(tmp_path, "_chat.txt", ENGLISH_IOS)
    import_whatsapp(path, store, me="Ann Lee", progress=False)
    assert store.owner() == Owner(42, "Ann")
    mine = [m for m in stored(store) if Owner(42, "Ann").wrote(m)]
    assert [(m.sender_id, m.sender_name, m.text) for m in mine] == [
        (42, "Ann", "happy new year"),
        (42, "Ann", ""),
    ]
    assert store.owner_wrote_in(mine[0].chat_id)


def test_someone_else_with_the_owners_name_is_refused(store: Store, tmp_path: Path) -> None:
    with store.transaction():
        store.set_owner(Owner(42, "Ann"))
    path = write(
        tmp_path, "group.txt", "1/2/24, 9:00 AM - Ann: hi\n1/2/24, 9:01 AM - Ann Lee: yo\n"
    )
    with pytest.raises(TwinError, match="'Ann' here has the name this store knows you by"):
        import_whatsapp(path, store, me="Ann Lee", progress=False)
    assert store.count_messages() == 0


def test_a_name_that_is_no_sender_is_refused_with_the_senders(store: Store, tmp_path: Path) -> None:
    path = write(tmp_path, "WhatsApp Chat with Bob.txt", ANDROID_MEDIA)
    with pytest.raises(TwinError) as caught:
        import_whatsapp(path, store, me="Olga", progress=False)
    assert str(caught.value) == (
        f"{path}: cannot tell which sender is you: no sender is named 'Olga'; pass --me NAME "
        "as the export writes your name (senders: 'Bob', 'Ann')"
    )
    assert (store.count_messages(), store.chats(), store.owner()) == (0, [], None)


def test_a_whatsapp_chat_yields_training_examples(store: Store, tmp_path: Path) -> None:
    path = voice_zip(tmp_path)
    import_whatsapp(path, store, me="Ann", transcribe=lambda s, n: TRANSCRIPTS[s], progress=False)
    config = config_from_dict(
        {
            "paths": {"data_dir": str(tmp_path / "data")},
            "memory": {"enabled": False},
            "dataset": {"eval_min_examples": 0},
        }
    )
    summary = build_dataset(config, store, progress=False)
    assert summary.train + summary.eval == 1
    rows = []
    for name in ("train.jsonl", "eval.jsonl"):
        for line in (config.dataset_dir / name).read_text().splitlines():
            rows.append(json.loads(line)["messages"])
    (example,) = rows
    turns = [(m["role"], m["content"]) for m in example if m["role"] != "system"]
    # Bob's transcribed voice note reads as what he said, the other as a placeholder; Ann's
    # untranscribed one is no reply of hers.
    assert turns == [
        ("user", "are you coming?\n[voice message] see you at six\n[voice message]"),
        ("assistant", "yes, at six"),
    ]


def foreign_files(folder: Path, exports: Path) -> dict[str, tuple[Path, str]]:
    """Files that are no WhatsApp export -> (path, what the error says)."""
    no_chat = folder / "photos.zip"
    with zipfile.ZipFile(no_chat, "w") as archive:
        archive.writestr("IMG-20240101-WA0001.jpg", b"\xff\xd8")
    damaged = folder / "WhatsApp Chat with Bob.zip"
    damaged.write_bytes(voice_zip(folder).read_bytes()[:200])
    telegram = exports / "chatstyle__result.json"
    files = {
        "telegram": (telegram, "line 1 is no dated message ('{')"),
        "text": ("Dear diary,\ntoday", "line 1 is no dated message ('Dear diary,')"),
        "blank lines first": ("\n\n  hello\n", "line 3 is no dated message ('hello')"),
        "empty": ("", "empty file"),
        "marks alone": ("\ufeff\u200e\n", "empty file"),
        "binary": (bytes(range(256)), "binary file"),
        "latin-1": ("31/12/2023, 23:59 - Zoë: hé".encode("latin-1"), "not UTF-8 text"),
        "no date": ("31/31/2023, 10:00 - Ann: hi\n", "line 1 has no valid date or time"),
        "zip without chat": (no_chat, "no chat text inside"),
        "damaged zip": (damaged, "damaged zip"),
    }
    paths = {}
    for kind, (content, message) in files.items():
        if isinstance(content, Path):
            paths[kind] = (content, message)
            continue
        path = folder / f"{kind}.txt"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        paths[kind] = (path, message)
    return paths


FOREIGN = (
    "telegram",
    "text",
    "blank lines first",
    "empty",
    "marks alone",
    "binary",
    "latin-1",
    "no date",
    "zip without chat",
    "damaged zip",
)


@pytest.mark.parametrize("kind", FOREIGN)
def test_a_file_that_is_no_export_is_one_line_and_leaves_the_store_unchanged(
    kind: str, store: Store, exports: Path, tmp_path: Path
) -> None:
    path, message = foreign_files(tmp_path, exports)[kind]
    with pytest.raises(TwinError) as caught:
        import_whatsapp(path, store, me="Ann", progress=False)
    error = str(caught.value)
    assert message in error and str(path) in error and "\n" not in error
    assert (store.count_messages(), store.chats(), store.owner()) == (0, [], None)


def test_the_cli_imports_and_prints_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, "config.toml", '[paths]\ndata_dir = "d"\n[memory]\nenabled = false\n')
    chat = voice_zip(tmp_path)
    assert main(["--config", str(config), "ingest", "whatsapp", str(chat), "--me", "Ann"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "imported Bob (WhatsApp): 1 chat, 5 messages added (0 system lines, 0 deleted skipped), "
        "0 voice notes transcribed, 3 kept as placeholders, "
    )
    assert main(["--config", str(config), "ingest", "whatsapp", str(chat), "--me", "Ann"]) == 0
    assert "already imported (same file)" in capsys.readouterr().out


def test_the_cli_takes_me_from_the_config_or_asks_for_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chat = write(tmp_path, "WhatsApp Chat with Bob.txt", ANDROID_MEDIA)
    config = write(tmp_path, "config.toml", '[paths]\ndata_dir = "d"\n[memory]\nenabled = false\n')
    assert main(["--config", str(config), "ingest", "whatsapp", str(chat)]) == 1
    err = capsys.readouterr().err
    assert err == (
        f"twin: error: {chat}: pass --me NAME, your name as the WhatsApp export writes it "
        "(or set [identity] me to it)\n"
    )
    # A Telegram id in [identity] me names no WhatsApp sender: asked for the name too.
    config.write_text(config.read_text() + '[identity]\nme = "user123"\n')
    assert main(["--config", str(config), "ingest", "whatsapp", str(chat)]) == 1
    assert "pass --me NAME" in capsys.readouterr().err
    config.write_text(config.read_text().replace("user123", "Ann"))
    assert main(["--config", str(config), "ingest", "whatsapp", str(chat)]) == 0
    assert "12 messages added" in capsys.readouterr().out
