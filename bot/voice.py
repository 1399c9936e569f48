"""A voice message sent to the twin, as words: its sound fetched through the Bot API (getFile,
then the file download, both at `[telegram] api_base_url`, so a local Bot API server works)
and transcribed by Whisper (ingest.voice) on a thread of its own, never on the event loop nor
on the model's thread.

What cannot be heard (voice off, longer than `[voice] max_seconds`, over the Bot API's 20 MB
download limit, a failed download, a damaged sound, no Whisper model) is answered as the
"[voice message]" placeholder, as before; the log says why, never what was said.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from concurrent.futures import ThreadPoolExecutor

from telegram import Message
from telegram.error import TelegramError

from ingest.voice import Transcriber, Unheard
from twin.core.config import Config
from twin.core.errors import TwinError

log = logging.getLogger(__name__)

# getFile serves files up to this size to bots (a local Bot API server serves more).
BOT_API_DOWNLOAD_LIMIT = 20 * 1024 * 1024


class Listener:
    """Transcribes the voice and round video messages of the bot's chats, one at a time."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="twin-voice")
        self._transcriber: Transcriber | None = None  # loaded at the first voice message
        self._problem_told = False

    async def heard(self, message: Message, config: Config, language: str) -> str | None:
        """What was said in `message`: its transcript ('' for no speech), or None when it is
        no voice message or cannot be heard (it then reads as its placeholder)."""
        sound = message.voice or message.video_note
        if sound is None or not config.voice.enabled:
            return None
        chat = message.chat_id
        duration = sound.duration
        # PTB 22 gives a timedelta where asked to (PTB_TIMEDELTA), else seconds.
        seconds = duration.total_seconds() if isinstance(duration, dt.timedelta) else duration
        if seconds > config.voice.max_seconds:
            log.info("chat %s: a %d s voice message, over [voice] max_seconds", chat, seconds)
            return None
        if sound.file_size and sound.file_size > BOT_API_DOWNLOAD_LIMIT and _official(config):
            log.info("chat %s: a voice message over the Bot API's 20 MB download limit", chat)
            return None
        try:
            file = await sound.get_file()
            data = bytes(await file.download_as_bytearray())
        except (TelegramError, OSError) as err:
            log.warning("chat %s: the voice message could not be fetched (%s)", chat, err)
            return None
        transcriber = self._transcriber_for(config).with_language(language)
        loop = asyncio.get_running_loop()
        try:
            transcript = await loop.run_in_executor(self._executor, transcriber.transcribe, data)
        except Unheard as unheard:
            log.info("chat %s: the voice message was not transcribed (%s)", chat, unheard.reason)
            return None
        except TwinError as err:
            if not self._problem_told:  # once: every voice message would say the same
                log.error("voice messages stay placeholders: %s", err)
                self._problem_told = True
            return None
        return transcript.text

    def _transcriber_for(self, config: Config) -> Transcriber:
        """The transcriber of `[voice]` as it stands (admins' settings may change it)."""
        current = self._transcriber
        if current is None or current.voice != config.voice:
            current = self._transcriber = Transcriber(config.voice, config.model_cache, None)
            self._problem_told = False
        return current

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _official(config: Config) -> bool:
    return config.telegram.api_base_url.rstrip("/") == "https://api.telegram.org"
