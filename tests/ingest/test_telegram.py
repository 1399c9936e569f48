"""The Telethon pull, offline: real Telethon TL objects, a scripted client double, a real store.

Telegram itself is never contacted. The double (tests/ingest/telethon_doubles.py) serves real
`telethon.tl.types.Message` objects the way `TelegramClient.iter_messages(entity, min_id=...,
reverse=True)` does (ids above min_id, oldest first) and can be scripted to fail mid-chat, as
flood control or a crash would.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from telethon import errors
from telethon.errors import ChannelPrivateError, FloodWaitError
from telethon.tl import types as tl

from ingest.store import Chat, Message, Owner, Store, open_store
from ingest.telegram import (
    MAX_FLOOD_WAITS_PER_CHAT,
    PullSummary,
    VoiceDownloads,
    chat_from_dialog_entity,
    message_from_telethon,
)
from ingest.voice import Transcriber, Voice
from tests.helpers import VOICE
from tests.ingest.telethon_doubles import (
    ALICE,
    BOB,
    FAMILY,
    FAMILY_ID,
    HELPER_BOT,
    ME,
    NEWS,
    NEWS_ID,
    OWNER_ID,
    T0,
    FakeClient,
    Fault,
    Recorder,
    at,
    channel,
    document,
    message,
    private_history,
    pull,
    stored_ids,
)
from twin.core.config import VoiceConfig
from twin.core.errors import TwinError

# --- message_from_telethon ----------------------------------------------------------------


def convert(chat_id: int, raw: Any, **kw: Any) -> Message:
    got = message_from_telethon(chat_id, raw, **kw)
    assert got is not None
    return got


def test_peer_text_message_in_a_private_chat_is_from_the_peer() -> None:
    # Telegram omits from_id for the peer's messages in private chats: the peer is the sender.
    raw = message(5, tl.PeerUser(42), message="hi there", from_id=None, out=False)
    got = convert(42, raw, owner_id=OWNER_ID, names={42: "Alice Smith"})
    assert got is not None
    assert got._asdict() == {
        "chat_id": 42,
        "message_id": 5,
        "date": int(at(5).timestamp()),
        "sender_id": 42,
        "sender_name": "Alice Smith",
        "kind": "message",
        "media_type": None,
        "text": "hi there",
        "reply_to": None,
        "forwarded_from": None,
        "edited": None,
        "spoken": False,
    }


def test_outgoing_message_is_the_owners_and_never_guessed_as_the_peer() -> None:
    raw = message(6, tl.PeerUser(42), out=True)
    assert convert(42, raw, owner_id=OWNER_ID).sender_id == OWNER_ID
    # Without the owner's id an outgoing message has no known sender, not the peer's id.
    assert convert(42, raw).sender_id is None
    # As an anonymous admin, from_id names the group, but the words are still the owner's.
    anonymous = message(7, tl.PeerChannel(600), out=True, from_id=tl.PeerChannel(600))
    assert convert(-1000000000600, anonymous, owner_id=OWNER_ID).sender_id == OWNER_ID


def test_group_and_channel_senders_are_marked_ids() -> None:
    # Users as they are, channels -(10**12 + id): channel 1000 speaking is not user 1000.
    in_group = message(1, tl.PeerChat(77), from_id=tl.PeerUser(43))
    assert convert(FAMILY_ID, in_group).sender_id == 43
    in_supergroup = message(2, tl.PeerChannel(600), from_id=tl.PeerChannel(601))
    assert convert(-1000000000600, in_supergroup).sender_id == -1000000000601
    post = message(3, tl.PeerChannel(500), post=True)
    assert convert(NEWS_ID, post).sender_id == NEWS_ID
    as_channel = message(4, tl.PeerChannel(600), from_id=tl.PeerChannel(OWNER_ID))
    assert convert(-1000000000600, as_channel, owner_id=OWNER_ID).sender_id != OWNER_ID


def test_service_message() -> None:
    raw = tl.MessageService(
        id=1,
        peer_id=tl.PeerChat(77),
        date=at(1),
        from_id=tl.PeerUser(OWNER_ID),
        out=True,
        action=tl.MessageActionChatCreate(title="Family", users=[OWNER_ID, 42]),
    )
    got = convert(FAMILY_ID, raw, owner_id=OWNER_ID)
    assert (got.kind, got.sender_id, got.text, got.media_type) == ("service", OWNER_ID, "", None)


def test_empty_message_is_skipped() -> None:
    assert message_from_telethon(42, tl.MessageEmpty(id=9, peer_id=None)) is None


def test_photo_keeps_its_caption() -> None:
    raw = message(1, tl.PeerUser(42), message="look", media=tl.MessageMediaPhoto(tl.PhotoEmpty(1)))
    got = convert(42, raw)
    assert (got.media_type, got.text) == ("photo", "look")


STICKER = tl.DocumentAttributeSticker(alt="🙂", stickerset=tl.InputStickerSetEmpty())
VIDEO = tl.DocumentAttributeVideo(duration=3.0, w=240, h=240)


@pytest.mark.parametrize(
    ("media", "expected"),
    [
        (document(STICKER), "sticker"),
        (document(STICKER, VIDEO), "sticker"),  # a video sticker is still a sticker
        (document(tl.DocumentAttributeAudio(duration=4, voice=True)), "voice_message"),
        (document(voice=True), "voice_message"),  # newer layers flag it on the media
        (
            document(tl.DocumentAttributeVideo(duration=5, w=1, h=1, round_message=True)),
            "video_message",
        ),
        (document(round=True), "video_message"),
        (document(VIDEO), "video_file"),
        (document(tl.DocumentAttributeAudio(duration=200, title="Song")), "audio_file"),
        (document(tl.DocumentAttributeAnimated(), VIDEO), "animation"),
        (document(tl.DocumentAttributeFilename("report.pdf")), "file"),
        (tl.MessageMediaDocument(document=tl.DocumentEmpty(id=1)), "file"),
        (tl.MessageMediaGeo(tl.GeoPointEmpty()), "location"),
        (tl.MessageMediaContact("+1555", "Bob", "", "", 43), "contact"),
        (tl.MessageMediaWebPage(tl.WebPageEmpty(id=1, url="https://x.org")), None),
        (tl.MessageMediaEmpty(), None),
        (tl.MessageMediaUnsupported(), "other"),
    ],
)
def test_media_types(media: Any, expected: str | None) -> None:
    got = convert(42, message(1, tl.PeerUser(42), message="", media=media))
    assert got.media_type == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (tl.MessageFwdHeader(date=T0, from_name="Some Channel"), "Some Channel"),
        (tl.MessageFwdHeader(date=T0, from_id=tl.PeerChannel(123)), "123"),
        (tl.MessageFwdHeader(date=T0), "unknown"),
    ],
)
def test_forward_names_its_source(header: tl.MessageFwdHeader, expected: str) -> None:
    raw = message(1, tl.PeerUser(42), out=True, fwd_from=header)
    assert convert(42, raw, owner_id=OWNER_ID).forwarded_from == expected


def test_reply_points_at_a_message_of_the_same_chat_only() -> None:
    reply = message(4, tl.PeerUser(42), reply_to=tl.MessageReplyHeader(reply_to_msg_id=3))
    assert convert(42, reply).reply_to == 3
    elsewhere = tl.MessageReplyHeader(reply_to_msg_id=3, reply_to_peer_id=tl.PeerChannel(9))
    assert convert(42, message(5, tl.PeerUser(42), reply_to=elsewhere)).reply_to is None
    story = tl.MessageReplyStoryHeader(peer=tl.PeerUser(42), story_id=1)
    assert convert(42, message(6, tl.PeerUser(42), reply_to=story)).reply_to is None
    # Group 42 is not user 42's chat: a reply to a message there points at nothing here.
    in_group = tl.MessageReplyHeader(reply_to_msg_id=3, reply_to_peer_id=tl.PeerChat(42))
    assert convert(42, message(7, tl.PeerUser(42), reply_to=in_group)).reply_to is None
    same_group = tl.MessageReplyHeader(reply_to_msg_id=3, reply_to_peer_id=tl.PeerChat(42))
    assert convert(-42, message(8, tl.PeerChat(42), reply_to=same_group)).reply_to == 3


def test_edit_date_unless_telegram_hides_the_edit() -> None:
    edited = message(1, tl.PeerUser(42), edit_date=at(100))
    assert convert(42, edited).edited == int(at(100).timestamp())
    hidden = message(2, tl.PeerUser(42), edit_date=at(100), edit_hide=True)
    assert convert(42, hidden).edited is None


# --- chat_from_dialog_entity --------------------------------------------------------------


@pytest.mark.parametrize(
    ("entity", "expected"),
    [
        (ALICE, Chat(42, "Alice Smith", "personal_chat")),
        (HELPER_BOT, Chat(44, "Helper", "bot_chat")),
        (ME, Chat(OWNER_ID, "Olga Owner", "saved_messages")),
        (FAMILY, Chat(FAMILY_ID, "Family", "private_group")),
        (channel(600, "Py", megagroup=True), Chat(-1000000000600, "Py", "private_supergroup")),
        (
            channel(601, "Rust", megagroup=True, username="r"),
            Chat(-1000000000601, "Rust", "public_supergroup"),
        ),
        (NEWS, Chat(NEWS_ID, "News", "private_channel")),
        (
            channel(501, "Wire", broadcast=True, username="w"),
            Chat(-1000000000501, "Wire", "public_channel"),
        ),
        # A channel whose only usernames are collectible ones is public too.
        (
            channel(502, "Coll", broadcast=True, usernames=[tl.Username("c", active=True)]),
            Chat(-1000000000502, "Coll", "public_channel"),
        ),
        (tl.User(id=45, deleted=True), Chat(45, None, "personal_chat")),
    ],
)
def test_chat_from_dialog_entity(entity: Any, expected: Chat) -> None:
    assert chat_from_dialog_entity(entity) == expected


# --- pull_history -------------------------------------------------------------------------


def test_first_pull_stores_everything_and_records_the_owner(db: Store) -> None:
    family = [
        message(i, tl.PeerChat(77), from_id=tl.PeerUser(43 if i % 2 else OWNER_ID))
        for i in range(1, 6)
    ]
    client = FakeClient(ME, [(ALICE, private_history(ALICE, range(1, 8))), (FAMILY, family)])
    rec = Recorder()

    summary = pull(client, db, rec)

    assert replace(summary, seconds=0.0) == PullSummary(
        chats=2, added=12, skipped_chats=0, seconds=0.0, flood_waits=0
    )
    assert db.owner() == Owner(OWNER_ID, "Olga Owner", "15550001")
    assert db.chats() == [
        Chat(FAMILY_ID, "Family", "private_group"),
        Chat(42, "Alice Smith", "personal_chat"),
    ]
    assert stored_ids(db, 42) == list(range(1, 8))
    assert stored_ids(db, FAMILY_ID) == list(range(1, 6))
    senders = {(m.sender_id, m.sender_name) for m in db.messages_of(42)}
    assert senders == {(OWNER_ID, "Olga Owner"), (42, "Alice Smith")}
    assert rec.lines == ["Alice Smith (42): 7 new messages", "Family (-77): 5 new messages"]


def test_pull_with_nothing_new_adds_nothing_and_asks_from_the_highest_id(db: Store) -> None:
    client = FakeClient(ME, [(ALICE, private_history(ALICE, range(1, 8)))])
    pull(client, db)
    client.calls.clear()
    rec = Recorder()

    summary = pull(client, db, rec)

    assert (summary.chats, summary.added) == (1, 0)
    assert client.calls == [(42, 7)]
    assert rec.lines == []  # no line for a chat without new messages


def test_new_messages_are_pulled_incrementally(db: Store) -> None:
    history = private_history(ALICE, range(1, 8))
    client = FakeClient(ME, [(ALICE, history)])
    pull(client, db)
    history.extend(private_history(ALICE, range(8, 11)))
    client.calls.clear()

    summary = pull(client, db)

    assert summary.added == 3
    assert client.calls == [(42, 7)]
    assert stored_ids(db, 42) == list(range(1, 11))


def test_flood_wait_sleeps_as_asked_then_resumes_where_it_stopped(db: Store) -> None:
    client = FakeClient(
        ME,
        [(ALICE, private_history(ALICE, range(1, 11))), (BOB, private_history(BOB, range(1, 4)))],
        faults={42: Fault(after=5, error=FloodWaitError(request=None, capture=42))},
    )
    rec = Recorder()

    summary = pull(client, db, rec, batch_size=3)

    assert rec.sleeps == [42]
    assert "telegram asks to wait 42 s (flood control), sleeping…" in rec.lines
    # The 5 messages read before the wait were kept: the retry starts above them.
    assert client.calls == [(42, 0), (42, 5), (43, 0)]
    assert stored_ids(db, 42) == list(range(1, 11))
    assert stored_ids(db, 43) == [1, 2, 3]
    assert (summary.added, summary.flood_waits, db.count_messages()) == (13, 1, 13)


def test_endless_flood_waits_give_up_with_a_user_facing_error(db: Store) -> None:
    flood = FloodWaitError(request=None, capture=7)
    client = FakeClient(
        ME,
        [(ALICE, private_history(ALICE, range(1, 101)))],
        faults={42: Fault(after=2, error=flood, times=100)},
    )
    rec = Recorder()

    with pytest.raises(TwinError, match="flood control"):
        pull(client, db, rec, batch_size=50)

    assert rec.sleeps == [7] * MAX_FLOOD_WAITS_PER_CHAT
    # Every read before giving up kept its progress; the next run resumes above it.
    assert stored_ids(db, 42) == list(range(1, 1 + 2 * (MAX_FLOOD_WAITS_PER_CHAT + 1)))


@pytest.mark.parametrize("crash", [RuntimeError("connection lost"), KeyboardInterrupt()])
def test_crash_keeps_committed_batches_and_a_rerun_completes(
    tmp_path: Path, crash: BaseException
) -> None:
    chats = [
        (ALICE, private_history(ALICE, range(1, 11))),
        (BOB, private_history(BOB, range(1, 6))),
    ]
    expected = {42: set(range(1, 11)), 43: set(range(1, 6))}
    path = tmp_path / "twin.db"
    client = FakeClient(ME, chats, faults={42: Fault(after=9, error=crash)})

    with open_store(path) as store, pytest.raises(type(crash)):
        pull(client, store, batch_size=4)

    with open_store(path) as store:
        # Two full batches were committed; the 9th message, read but not committed, is lost.
        assert stored_ids(store, 42) == list(range(1, 9))
        assert stored_ids(store, 43) == []
        resumed = FakeClient(ME, chats)
        summary = pull(resumed, store, batch_size=4)
        assert resumed.calls == [(42, 8), (43, 0)]
        assert summary.added == 15 - 8
        assert {cid: set(stored_ids(store, cid)) for cid in expected} == expected
        assert store.count_messages() == 15  # no duplicates


def test_include_and_exclude_by_id_and_by_name(db: Store) -> None:
    chats = [
        (ALICE, private_history(ALICE, range(1, 3))),
        (BOB, private_history(BOB, range(1, 3))),
        (FAMILY, [message(1, tl.PeerChat(77), from_id=tl.PeerUser(43))]),
    ]
    client = FakeClient(ME, chats)

    summary = pull(client, db, include=["alice smith", "77"], exclude=["Family"])

    assert (summary.chats, summary.skipped_chats) == (1, 2)
    assert [c.chat_id for c in db.chats()] == [42]  # unselected chats are not even named
    assert [cid for cid, _ in client.calls] == [42]

    summary = pull(client, db, exclude=["43"])
    assert [c.chat_id for c in db.chats()] == [FAMILY_ID, 42]


def test_a_chat_excluded_by_name_stays_excluded_after_a_rename(db: Store) -> None:
    family = [message(1, tl.PeerChat(77), from_id=tl.PeerUser(43))]
    client = FakeClient(ME, [(ALICE, private_history(ALICE, range(1, 3))), (FAMILY, family)])
    pull(client, db, exclude=["family"])
    assert [cid for cid, _ in client.calls] == [42]
    # The group is renamed, and writes on: the entry pinned its id at the first pull.
    renamed = tl.Chat(
        id=77,
        title="Relatives",
        photo=tl.ChatPhotoEmpty(),
        participants_count=3,
        date=T0,
        version=2,
    )
    family.append(message(2, tl.PeerChat(77), from_id=tl.PeerUser(43)))
    client = FakeClient(ME, [(ALICE, private_history(ALICE, range(1, 3))), (renamed, family)])

    summary = pull(client, db, exclude=["family"])

    assert [cid for cid, _ in client.calls] == [42]
    assert summary.skipped_chats == 1 and stored_ids(db, FAMILY_ID) == []
    assert FAMILY_ID not in {c.chat_id for c in db.chats()}


def test_an_included_chat_stays_included_and_its_old_name_takes_in_no_other(db: Store) -> None:
    client = FakeClient(
        ME,
        [(ALICE, private_history(ALICE, range(1, 3))), (BOB, private_history(BOB, range(1, 3)))],
    )
    pull(client, db, include=["Alice Smith"])
    assert [cid for cid, _ in client.calls] == [42]
    # Alice renames herself; Bob takes the name she had.
    alicia = tl.User(id=42, first_name="Alicia", bot=False)
    bob_as_alice = tl.User(id=43, first_name="Alice", last_name="Smith", bot=False)
    client = FakeClient(
        ME,
        [
            (alicia, private_history(alicia, range(1, 5))),
            (bob_as_alice, private_history(bob_as_alice, range(1, 3))),
        ],
    )

    pull(client, db, include=["Alice Smith"])

    assert [cid for cid, _ in client.calls] == [42]
    assert stored_ids(db, 42) == [1, 2, 3, 4] and stored_ids(db, 43) == []


def test_a_user_and_a_group_with_one_id_stay_two_chats(db: Store) -> None:
    # Telegram numbers users and groups apart: user 42 and group 42 are two chats, two
    # memory scopes; their message ids overlap and none is lost.
    club = tl.Chat(
        id=42, title="Club", photo=tl.ChatPhotoEmpty(), participants_count=5, date=T0, version=1
    )
    in_club = [message(i, tl.PeerChat(42), from_id=tl.PeerUser(43)) for i in range(1, 4)]
    client = FakeClient(ME, [(ALICE, private_history(ALICE, range(1, 4))), (club, in_club)])

    pull(client, db)

    assert db.chats() == [
        Chat(-42, "Club", "private_group"),
        Chat(42, "Alice Smith", "personal_chat"),
    ]
    assert stored_ids(db, 42) == [1, 2, 3] and stored_ids(db, -42) == [1, 2, 3]
    assert {m.sender_id for m in db.messages_of(-42)} == {43}


def test_bot_chats_pulled_channels_only_when_named(db: Store) -> None:
    # Which chat types teach the model is the dataset's decision; but a broadcast channel is
    # other people's posts, possibly millions: pulled only when include_chats names it.
    client = FakeClient(
        ME,
        [
            (HELPER_BOT, private_history(HELPER_BOT, range(1, 3))),
            (NEWS, [message(1, tl.PeerChannel(500), post=True)]),
        ],
    )
    summary = pull(client, db)
    assert (summary.added, summary.skipped_chats) == (2, 1)
    assert {c.type for c in db.chats()} == {"bot_chat"}
    summary = pull(client, db, include=["News", "Helper"])
    assert summary.added == 1
    assert {c.type for c in db.chats()} == {"bot_chat", "private_channel"}
    assert next(db.messages_of(NEWS_ID)).sender_id == NEWS_ID


def test_unreadable_chat_is_skipped_and_the_others_pulled(db: Store) -> None:
    client = FakeClient(
        ME,
        [
            (NEWS, [message(1, tl.PeerChannel(500), post=True)]),
            (ALICE, private_history(ALICE, range(1, 4))),
        ],
        faults={500: Fault(after=0, error=ChannelPrivateError(request=None))},
    )
    rec = Recorder()
    summary = pull(client, db, rec, include=["News", "Alice Smith"])
    assert (summary.chats, summary.skipped_chats, summary.added) == (1, 1, 3)
    assert "News (-1000000000500): history not readable (ChannelPrivateError), skipped" in rec.lines


def test_logs_never_carry_message_text(db: Store) -> None:
    secret = "my card is 4111 1111 1111 1111"
    history = [message(i, tl.PeerUser(42), message=f"{secret} #{i}") for i in range(1, 6)]
    client = FakeClient(
        ME, [(ALICE, history)], faults={42: Fault(after=2, error=FloodWaitError(None, capture=3))}
    )
    rec = Recorder()
    pull(client, db, rec, batch_size=2)
    assert rec.lines and not any("4111" in line for line in rec.lines)


def test_summary_line() -> None:
    assert (
        PullSummary(chats=3, added=120, skipped_chats=2, seconds=4.21, flood_waits=1).line()
        == "pulled 3 chats: 120 new messages, 2 chats skipped, 1 flood wait, 4.2 s"
    )
    assert (
        PullSummary(chats=1, added=1, skipped_chats=0, seconds=0.0, flood_waits=0).line()
        == "pulled 1 chat: 1 new message, 0 chats skipped, 0 flood waits, 0.0 s"
    )


def voice_note(msg_id: int, seconds: int, size: int, **fields: Any) -> tl.Message:
    sound = tl.Document(
        id=msg_id,
        access_hash=2,
        file_reference=b"",
        date=T0,
        mime_type="audio/ogg",
        size=size,
        dc_id=2,
        attributes=[tl.DocumentAttributeAudio(duration=seconds, voice=True)],
    )
    fields.setdefault("message", "")
    media = tl.MessageMediaDocument(document=sound, voice=True)
    return message(msg_id, tl.PeerUser(ALICE.id), media=media, **fields)


def test_voice_messages_are_downloaded_within_the_budget_and_heard(
    db: Store, whisper: Transcriber
) -> None:
    speech = (VOICE / "see-you-on-monday.en.ogg").read_bytes()
    history = [
        voice_note(1, 4, len(speech)),
        voice_note(2, 900, len(speech)),  # over [voice] max_seconds: not even downloaded
        voice_note(3, 4, 3 * 1024 * 1024),  # more than the budget has left
        voice_note(4, 4, len(speech)),  # its download fails
        voice_note(5, 4, len(speech), message="listen to this"),  # a caption is kept
    ]
    client = FakeClient(ME, [(ALICE, history)])
    client.files = {1: speech, 4: errors.FileReferenceExpiredError(request=None)}
    settings = VoiceConfig(pull_budget_mb=1)
    summary = pull(client, db, voice=VoiceDownloads(Voice(db, whisper), settings))
    by_id = {m.message_id: m for m in db.messages_of(ALICE.id)}
    assert by_id[1].spoken and "monday" in by_id[1].text.lower()
    assert [(by_id[n].text, by_id[n].spoken) for n in (2, 3, 4)] == [("", False)] * 3
    assert (by_id[5].text, by_id[5].spoken) == ("listen to this", False)
    assert client.downloads == [1, 4]
    assert "voice: 4 files; 1 transcribed" in summary.line()
    assert (
        "kept as placeholders: 1 not downloaded, 1 over the download budget, 1 too long"
        in summary.line()
    )

    # The next pull, with budget to spare, hears first what this one passed over (the budget
    # spent, the download failed); the too long one is never tried again, nor is one
    # deleted in Telegram since.
    client.files = {3: speech, 4: speech, 6: speech}
    history.append(voice_note(6, 4, len(speech)))
    client.downloads.clear()
    again = pull(client, db, voice=VoiceDownloads(Voice(db, whisper), VoiceConfig()))
    assert client.downloads == [3, 4, 6]
    by_id = {m.message_id: m for m in db.messages_of(ALICE.id)}
    assert all(by_id[n].spoken and "monday" in by_id[n].text.lower() for n in (3, 4, 6))
    assert "voice: 3 files; 3 transcribed before" in again.line()  # the same sound, once
    assert db.voice_in_telegram(ALICE.id) == []


def test_a_voice_message_passed_over_and_deleted_since_is_forgotten(
    db: Store, whisper: Transcriber
) -> None:
    history = [voice_note(1, 4, 3 * 1024 * 1024)]
    client = FakeClient(ME, [(ALICE, history)])
    pull(client, db, voice=VoiceDownloads(Voice(db, whisper), VoiceConfig(pull_budget_mb=0)))
    assert db.voice_in_telegram(ALICE.id) == [1]
    history.clear()  # deleted in Telegram
    pull(client, db, voice=VoiceDownloads(Voice(db, whisper), VoiceConfig()))
    assert db.voice_in_telegram(ALICE.id) == [] and client.downloads == []
