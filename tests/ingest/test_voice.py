"""Voice messages as words: Whisper base from its packages, transcripts kept by content, and
a Telegram Desktop export's voice and round video messages transcribed in place."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ingest.dialog import said_of
from ingest.export import import_export
from ingest.store import Owner, Store
from ingest.voice import (
    BASE_FOLDER,
    BASE_SHA256,
    TOO_LONG,
    UNREADABLE,
    Transcriber,
    Unheard,
    Voice,
    decoded,
    whisper_model_folder,
)
from ingest.whatsapp import import_whatsapp
from tests.helpers import VOICE
from twin.core.config import VoiceConfig
from twin.core.files import file_sha256

ENGLISH = VOICE / "see-you-on-monday.en.ogg"
RUSSIAN = VOICE / "privet.ru.ogg"


def test_whisper_base_is_joined_from_its_packages_and_a_damaged_copy_is_rebuilt(
    tmp_path: Path,
) -> None:
    folder = whisper_model_folder(VoiceConfig(), tmp_path)
    assert folder == tmp_path / BASE_FOLDER
    assert file_sha256(folder / "model.bin") == BASE_SHA256["model.bin"]
    (folder / "model.bin").write_bytes(b"not a model")
    (folder / "tokenizer.json").write_text("{}")
    whisper_model_folder(VoiceConfig(), tmp_path)
    assert file_sha256(folder / "model.bin") == BASE_SHA256["model.bin"]
    assert file_sha256(folder / "tokenizer.json") == BASE_SHA256["tokenizer.json"]


def test_a_model_folder_without_a_model_is_a_one_line_error(tmp_path: Path) -> None:
    from twin.core.errors import TwinError

    with pytest.raises(TwinError, match=r"\[voice\] model .*: no model.bin there"):
        whisper_model_folder(VoiceConfig(model=str(tmp_path)), tmp_path)


def test_english_and_russian_voice_messages_are_heard(whisper: Transcriber) -> None:
    english = whisper.transcribe(ENGLISH.read_bytes())
    assert "monday" in english.text.lower() and "bridge" in english.text.lower()
    assert english.language == "en" and 3 < english.seconds < 5
    russian = whisper.with_language("ru").transcribe(RUSSIAN)
    assert "привет" in russian.text.lower() and "увидимся" in russian.text.lower()


def test_what_is_no_sound_or_too_long_is_unheard(whisper: Transcriber, tmp_path: Path) -> None:
    for junk in (b"", b"OggS" + bytes(200), json.dumps({"not": "audio"}).encode()):
        with pytest.raises(Unheard) as unheard:
            whisper.transcribe(junk)
        assert unheard.value.reason == UNREADABLE
    short = Transcriber(VoiceConfig(max_seconds=2), tmp_path, "en")
    with pytest.raises(Unheard) as unheard:
        short.transcribe(ENGLISH.read_bytes())  # 3.7 s: refused before any model loads
    assert unheard.value.reason == TOO_LONG


def test_a_sound_is_transcribed_once_whatever_its_name(store: Store, whisper: Transcriber) -> None:
    voice = Voice(store, whisper)
    first = voice.heard(ENGLISH)
    again = voice.heard(ENGLISH.read_bytes())
    assert first and again == first
    assert (voice.tally.transcribed, voice.tally.remembered) == (1, 1)
    assert 0 < voice.tally.realtime_factor < 1
    assert "1 transcribed (0.1 audio minutes" in voice.summary()
    assert "1 transcribed before" in voice.summary()


def round_video(sound: Path) -> bytes:
    """A Telegram-like round video (MP4: a small picture, and the voice as AAC)."""
    import av

    audio = decoded(sound)
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        picture = container.add_stream("mpeg4", rate=10)
        picture.width = picture.height = 64
        picture.pix_fmt = "yuv420p"
        speech = container.add_stream("aac", rate=16000)
        speech.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (audio * 32767).astype(np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = 16000
        for packet in [*speech.encode(frame), *speech.encode(None)]:
            container.mux(packet)
        for _ in range(int(len(audio) / 16000 * 10)):
            still = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in picture.encode(still):
                container.mux(packet)
        for packet in picture.encode(None):
            container.mux(packet)
    return out.getvalue()


def voice_export(folder: Path) -> Path:
    """An export of a chat with Vera, made "with voice messages" and round videos: her voice
    message, her round video, the owner's voice message, one whose file is not there and one
    whose file is damaged."""
    (folder / "voice_messages").mkdir(parents=True)
    (folder / "round_video_messages").mkdir()
    shutil.copy(ENGLISH, folder / "voice_messages" / "audio_1@01-05-2024_10-00-00.ogg")
    shutil.copy(RUSSIAN, folder / "voice_messages" / "audio_2@01-05-2024_10-01-00.ogg")
    (folder / "voice_messages" / "audio_4@01-05-2024_10-03-00.ogg").write_bytes(b"OggS" * 50)
    (folder / "round_video_messages" / "file_5@01-05-2024_10-04-00.mp4").write_bytes(
        round_video(ENGLISH)
    )

    def voice(n: int, sender: str, sender_id: str, file: str, media: str) -> dict[str, object]:
        return {
            "id": n,
            "type": "message",
            "date": f"2024-05-01T10:0{n}:00",
            "date_unixtime": str(1714557600 + 60 * n),
            "from": sender,
            "from_id": sender_id,
            "file": file,
            "media_type": media,
            "mime_type": "audio/ogg",
            "duration_seconds": 4,
            "text": "",
            "text_entities": [],
        }

    vera, me, sounds, videos = "user7", "user1", "voice_messages", "round_video_messages"
    messages = [
        voice(1, "Vera", vera, f"{sounds}/audio_1@01-05-2024_10-00-00.ogg", "voice_message"),
        voice(2, "Me", me, f"{sounds}/audio_2@01-05-2024_10-01-00.ogg", "voice_message"),
        voice(3, "Vera", vera, f"{sounds}/audio_3@01-05-2024_10-02-00.ogg", "voice_message"),
        voice(4, "Vera", vera, f"{sounds}/audio_4@01-05-2024_10-03-00.ogg", "voice_message"),
        voice(5, "Vera", vera, f"{videos}/file_5@01-05-2024_10-04-00.mp4", "video_message"),
        voice(6, "Vera", vera, "../../outside.ogg", "voice_message"),
    ]
    chat = {"name": "Vera", "type": "personal_chat", "id": 7, "messages": messages}
    (folder / "result.json").write_text(json.dumps(chat))
    return folder


def test_an_exports_voice_messages_become_their_words(
    store: Store, whisper: Transcriber, tmp_path: Path
) -> None:
    folder = voice_export(tmp_path / "export")
    summary = import_export(
        folder, store, me="1", progress=False, voice=lambda s: Voice(s, whisper)
    )
    by_id = {m.message_id: m for m in store.messages_of(7)}
    vera = by_id[1]
    assert vera.spoken and "monday" in vera.text.lower()
    assert by_id[2].spoken and by_id[2].text  # the owner's own voice message (Russian sound)
    assert by_id[5].spoken and "monday" in by_id[5].text.lower()  # a round video, by its sound
    for kept in (3, 4, 6):  # not there, damaged, outside the export: placeholders
        assert (by_id[kept].text, by_id[kept].spoken) == ("", False)
    # The friend's words are marked as spoken; the owner's are their words, as typed ones are.
    owner = Owner(1)
    heard = said_of(vera, owner)
    assert heard is not None and heard.text.startswith("[voice message] ")
    assert said_of(by_id[5], owner).text.startswith("[video message] ")  # type: ignore[union-attr]
    own = said_of(by_id[2], owner)
    assert own is not None and own.text == by_id[2].text
    assert said_of(by_id[3], owner).text == "[voice message]"  # type: ignore[union-attr]
    assert "voice: 5 files; 3 transcribed" in summary.line()
    assert "kept as placeholders: 1 missing, 1 unreadable" in summary.line()

    # The file that was missing turns up: the next import of the same export hears it alone.
    shutil.copy(ENGLISH, folder / "voice_messages" / "audio_3@01-05-2024_10-02-00.ogg")
    again = import_export(folder, store, me="1", progress=False, voice=lambda s: Voice(s, whisper))
    assert again.unchanged
    assert "1 transcribed before" in again.line()  # the same sound as message 1
    assert "kept as placeholders: 1 unreadable" in again.line()
    assert "monday" in next(m for m in store.messages_of(7) if m.message_id == 3).text.lower()


def test_with_voice_off_the_placeholders_stay_and_say_why(store: Store, tmp_path: Path) -> None:
    folder = voice_export(tmp_path / "export")
    summary = import_export(folder, store, me="1", progress=False, voice=lambda s: Voice(s, None))
    assert all(not m.spoken and m.text == "" for m in store.messages_of(7))
    assert "kept as placeholders: 5 voice off" in summary.line()


def test_a_missing_model_keeps_the_placeholders_and_the_import(
    store: Store, tmp_path: Path
) -> None:
    folder = voice_export(tmp_path / "export")
    broken = Transcriber(VoiceConfig(model=str(tmp_path / "nowhere")), tmp_path, "en")
    summary = import_export(folder, store, me="1", progress=False, voice=lambda s: Voice(s, broken))
    assert summary.added == 6
    assert "no Whisper model" in summary.line() and "no model.bin there" in summary.line()


def test_a_whatsapp_voice_note_is_heard(store: Store, whisper: Transcriber, tmp_path: Path) -> None:
    path = tmp_path / "WhatsApp Chat - Vera.zip"
    note = "00000002-AUDIO-2024-05-01-10-01-00.opus"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "_chat.txt",
            "[01.05.24, 10:00:00] Anna: Ты где?\n"
            f"[01.05.24, 10:01:00] Vera: \u200e<attached: {note}>\n",
        )
        archive.write(RUSSIAN, note)
    voice = Voice(store, whisper.with_language("ru"))
    summary = import_whatsapp(
        path, store, me="Anna", transcribe=lambda sound, _name: voice.heard(sound), progress=False
    )
    (chat,) = store.chats()
    heard = [m for m in store.messages_of(chat.chat_id) if m.sender_name == "Vera"]
    assert len(heard) == 1 and heard[0].spoken and "привет" in heard[0].text.lower()
    assert summary.transcribed == 1 and voice.tally.transcribed == 1


def test_a_damaged_model_keeps_the_placeholders_and_says_so(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "large-v3"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"not a model")
    damaged = Transcriber(VoiceConfig(model=str(folder)), tmp_path, "en")
    voice = Voice(store, damaged)
    assert voice.heard(ENGLISH) is None and voice.heard(RUSSIAN) is None
    assert voice.tally.kept == {"no Whisper model": 2}
    assert "not a faster-whisper model that loads" in voice.summary()
