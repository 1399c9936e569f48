"""Pull the owner's own history from Telegram with Telethon (`twin ingest telegram`).

The pull is incremental and resumable: each chat is read oldest-first from just above the
highest message id already stored, and committed every `batch_size` messages in its own
transaction. An interruption (a crash, Ctrl-C, a dropped connection) loses at most the batch
in flight, and the next run picks up exactly where the store ends, with no gaps and no
duplicates (the store ignores rows it already has).

Chat and sender ids are stored marked, as Telethon's `utils.get_peer_id` gives them (users
as they are, basic groups -id, channels and supergroups -100...): the importer of Telegram
Desktop exports turns their bare ids and chat types into the same (ingest.peers), so pulled
and exported copies of a chat land on the same rows, and a user never on a group's.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from telethon import TelegramClient, errors, utils
from telethon.tl import types

from ingest.selection import INCLUDE, ChatSelection
from ingest.store import Chat, Message, Owner, Store, open_store
from ingest.voice import (
    NOT_DOWNLOADED,
    OVER_BUDGET,
    SPOKEN_MEDIA,
    TOO_LONG,
    Voice,
    voice_for,
)
from twin.core.config import Config, VoiceConfig, secret
from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir, make_private_file

# Flood waits tolerated per chat before giving up: a chat that keeps tripping flood control
# after this many sleeps is better retried later than waited on all night.
MAX_FLOOD_WAITS_PER_CHAT = 5
BROADCAST_TYPES = frozenset({"public_channel", "private_channel"})

# Errors that make one chat's history unreadable (left or banned from a channel, a group that
# needs admin rights) without saying anything about the others: that chat is skipped.
_UNREADABLE_CHAT_ERRORS = (errors.ChannelPrivateError, errors.ChatAdminRequiredError)


class HistoryClient(Protocol):
    """The slice of `telethon.TelegramClient` the pull uses (a test double is enough)."""

    async def get_me(self) -> Any: ...

    def iter_dialogs(self) -> AsyncIterator[Any]: ...

    def iter_messages(self, entity: Any, *, min_id: int, reverse: bool) -> AsyncIterator[Any]: ...

    async def download_media(self, message: Any, file: Any) -> Any: ...

    async def get_messages(self, entity: Any, *, ids: list[int]) -> Any: ...


@dataclass(frozen=True)
class PullSummary:
    chats: int
    added: int
    skipped_chats: int
    seconds: float
    flood_waits: int
    voice: str = ""  # what became of the voice messages (ingest.voice), '' when none

    def line(self) -> str:
        line = (
            f"pulled {_plural(self.chats, 'chat')}: {_plural(self.added, 'new message')}, "
            f"{_plural(self.skipped_chats, 'chat')} skipped, "
            f"{_plural(self.flood_waits, 'flood wait')}, {self.seconds:.1f} s"
        )
        return f"{line}; {self.voice}" if self.voice else line


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- conversion: Telethon objects to store rows ------------------------------------------


def message_from_telethon(
    chat_id: int,
    msg: Any,
    *,
    owner_id: int | None = None,
    names: Mapping[int, str] | None = None,
) -> Message | None:
    """A Telethon `Message` / `MessageService` as a store row; None for `MessageEmpty`.

    `owner_id` attributes outgoing messages to the owner; `names` (marked id -> display name)
    names senders the message itself does not carry an entity for.
    """
    if isinstance(msg, types.MessageEmpty) or msg.date is None:
        return None
    service = isinstance(msg, types.MessageService)
    sender_id = _sender_id(msg, owner_id)
    edit_date = getattr(msg, "edit_date", None)
    return Message(
        chat_id=chat_id,
        message_id=msg.id,
        date=int(msg.date.timestamp()),
        sender_id=sender_id,
        sender_name=_sender_name(msg, sender_id, names or {}),
        kind="service" if service else "message",
        media_type=None if service else media_type_of(msg.media),
        text=("" if service else msg.message) or "",
        reply_to=_reply_to(chat_id, msg.reply_to),
        forwarded_from=_forwarded_from(msg.fwd_from),
        # edit_hide: Telegram set edit_date for a change the user never saw as an edit.
        edited=int(edit_date.timestamp()) if edit_date and not msg.edit_hide else None,
    )


def _peer_id(peer: Any) -> int:
    """The marked id of a peer (ingest.peers): what the store keys chats and senders by."""
    return utils.get_peer_id(peer)


def _sender_id(msg: Any, owner_id: int | None) -> int | None:
    # `out` first: the owner also writes as an anonymous admin or as their channel, and then
    # from_id names the group or channel, yet these are still the owner's words.
    if msg.out and owner_id is not None:
        return owner_id
    if msg.from_id is not None:
        return _peer_id(msg.from_id)
    if msg.out:
        return None  # the owner's, but their id was not given: never guess the peer
    # Telegram omits from_id for the peer's messages in a private chat (the sender can only be
    # the peer) and for channel posts (the channel speaks).
    if msg.post or isinstance(msg.peer_id, types.PeerUser):
        return _peer_id(msg.peer_id)
    return None


def _sender_name(msg: Any, sender_id: int | None, names: Mapping[int, str]) -> str | None:
    if sender_id is None:
        return None
    if sender_id in names:
        return names[sender_id]
    # Telethon fills `sender` from the entities that came with the history page: no request.
    sender = getattr(msg, "sender", None)
    if sender is not None and getattr(sender, "id", None) == sender_id:
        return utils.get_display_name(sender) or None  # '' = a deleted account
    return None


def _reply_to(chat_id: int, header: Any) -> int | None:
    if not isinstance(header, types.MessageReplyHeader) or not header.reply_to_msg_id:
        return None  # none, or a reply to a story
    # A reply to a message of another chat: its id would point at an unrelated row here.
    if header.reply_to_peer_id is not None and _peer_id(header.reply_to_peer_id) != chat_id:
        return None
    return header.reply_to_msg_id


def _forwarded_from(header: Any) -> str | None:
    """Who a forward came from, as the export writes it: the name, else the id; never ''."""
    if header is None:
        return None
    if header.from_name:
        return header.from_name
    if header.from_id is not None:
        # A label, not a key: the bare id, as an export's forwarded_from_id reads.
        return str(utils.get_peer_id(header.from_id, add_mark=False))
    return "unknown"


# Media kinds in Telegram Desktop export vocabulary (see ingest.export), so the dataset labels
# pulled and exported media alike. A link preview is not media: the text carries the link.
_MEDIA_TYPES: dict[type, str | None] = {
    types.MessageMediaEmpty: None,
    types.MessageMediaWebPage: None,
    types.MessageMediaPhoto: "photo",
    types.MessageMediaGeo: "location",
    types.MessageMediaGeoLive: "location",
    types.MessageMediaVenue: "venue",
    types.MessageMediaContact: "contact",
    types.MessageMediaPoll: "poll",
    types.MessageMediaGame: "game",
    types.MessageMediaInvoice: "invoice",
    types.MessageMediaGiveaway: "giveaway",
    types.MessageMediaToDo: "todo_list",
    types.MessageMediaDice: "dice",
}


def media_type_of(media: Any) -> str | None:
    """The store's media_type of a message's `media` (None: no media)."""
    if media is None:
        return None
    if isinstance(media, types.MessageMediaDocument):
        return _document_type(media)
    return _MEDIA_TYPES.get(type(media), "other")


def _document_type(media: types.MessageMediaDocument) -> str:
    # Newer layers flag voice notes and round videos on the media itself.
    if media.voice:
        return "voice_message"
    if media.round:
        return "video_message"
    document = media.document
    attributes = document.attributes if isinstance(document, types.Document) else []
    kinds = {type(a): a for a in attributes}
    # Sticker first: video stickers also carry a video attribute.
    if types.DocumentAttributeSticker in kinds:
        return "sticker"
    audio = kinds.get(types.DocumentAttributeAudio)
    if audio is not None:
        return "voice_message" if audio.voice else "audio_file"
    if types.DocumentAttributeAnimated in kinds:
        return "animation"  # GIFs are silent videos with this extra attribute
    video = kinds.get(types.DocumentAttributeVideo)
    if video is not None:
        return "video_message" if video.round_message else "video_file"
    return "file"


def chat_from_dialog_entity(entity: Any) -> Chat:
    """A dialog's User / Chat / Channel as a store chat, typed as Telegram Desktop exports do."""
    name = utils.get_display_name(entity) or None
    return Chat(_peer_id(entity), name, _chat_type(entity))


def _chat_type(entity: Any) -> str | None:
    if isinstance(entity, types.User):
        if entity.is_self:
            return "saved_messages"
        return "bot_chat" if entity.bot else "personal_chat"
    if isinstance(entity, types.Chat | types.ChatForbidden):
        return "private_group"
    if isinstance(entity, types.Channel | types.ChannelForbidden):
        public = _has_username(entity)
        if entity.megagroup:
            return "public_supergroup" if public else "private_supergroup"
        return "public_channel" if public else "private_channel"
    return None


def _has_username(entity: Any) -> bool:
    if getattr(entity, "username", None):
        return True
    # Channels whose only usernames are collectible ones list them here, username left None.
    return any(u.active for u in getattr(entity, "usernames", None) or ())


# --- the pull ------------------------------------------------------------------------------


async def pull_history(
    client: HistoryClient,
    store: Store,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    log: Callable[[str], object] = print,
    batch_size: int = 200,
    wait_time: float | None = None,
    voice: VoiceDownloads | None = None,
) -> PullSummary:
    """Record the owner, then pull every selected chat's messages newer than the store has.

    `wait_time` is passed to `iter_messages` when set (takeout sessions can use 0); left out
    otherwise, so a test double needs only `min_id` and `reverse`. With `voice`, voice and
    round video messages are downloaded within its budget and stored as what was said.
    """
    started = time.perf_counter()
    owner = await _record_owner(client, store)
    # Listed up front: dialogs are few requests, and history reads then never interleave
    # with a half-read dialog list.
    entities = [dialog.entity async for dialog in client.iter_dialogs()]
    chats = [chat_from_dialog_entity(entity) for entity in entities]
    # Entries that name a chat pin its id before anything is pulled: renamed later, a chat
    # stays excluded (or included) by the name it had (ingest.selection).
    selection = ChatSelection.load(store, include, exclude)
    selection.pin([*chats, *store.chats()])
    selection.save(store)
    pulled = skipped = added = flood_waits = 0
    for entity, chat in zip(entities, chats, strict=True):
        if not _should_pull(chat, selection):
            skipped += 1
            continue
        with store.transaction():
            store.save_chat(chat)
        puller = _ChatPull(client, store, entity, chat, owner, batch_size, wait_time, voice)
        try:
            await puller.run(sleep=sleep, log=log)
        except _UNREADABLE_CHAT_ERRORS as err:
            log(f"{_label(chat)}: history not readable ({type(err).__name__}), skipped")
            skipped += 1
            continue
        finally:
            added += puller.added
            flood_waits += puller.flood_waits
        pulled += 1
        if puller.added:
            log(f"{_label(chat)}: {_plural(puller.added, 'new message')}")
    return PullSummary(
        chats=pulled,
        added=added,
        skipped_chats=skipped,
        seconds=time.perf_counter() - started,
        flood_waits=flood_waits,
        voice=voice.voice.summary() if voice is not None else "",
    )


def _should_pull(chat: Chat, selection: ChatSelection) -> bool:
    """Selected chats, except broadcast channels unless named in include_chats: a channel is
    other people's words (never trained on by default) and can hold millions of posts."""
    if chat.type in BROADCAST_TYPES and not selection.lists(chat, INCLUDE):
        return False
    return selection.selects(chat)


async def _record_owner(client: HistoryClient, store: Store) -> Owner:
    me = await client.get_me()
    owner = Owner(me.id, utils.get_display_name(me) or None, me.phone or None)
    with store.transaction():
        store.set_owner(owner)
    return owner


def _label(chat: Chat) -> str:
    return f"{chat.name} ({chat.chat_id})" if chat.name else str(chat.chat_id)


class _ChatPull:
    """One chat's incremental pull; counts what it added even when it ends in an exception."""

    def __init__(
        self,
        client: HistoryClient,
        store: Store,
        entity: Any,
        chat: Chat,
        owner: Owner,
        batch_size: int,
        wait_time: float | None,
        voice: VoiceDownloads | None,
    ):
        self.client = client
        self.voice = voice
        self.store = store
        self.entity = entity
        self.chat = chat
        self.owner = owner
        self.batch_size = batch_size
        self.wait_time = wait_time
        self.added = 0
        self.flood_waits = 0
        self.passed_over: list[int] = []  # voice messages of the batch left for a later pull
        # The peer of a private chat and the owner: names for messages that carry no entity.
        self.names = {owner.user_id: owner.name} if owner.user_id and owner.name else {}
        if chat.type in ("personal_chat", "bot_chat") and chat.name:
            self.names[chat.chat_id] = chat.name

    async def run(
        self, *, sleep: Callable[[float], Awaitable[object]], log: Callable[[str], object]
    ) -> None:
        while True:
            try:
                if self.voice is not None:
                    await self._hear_passed_over(self.voice)
                await self._read_from(self.store.max_message_id(self.chat.chat_id))
                return
            except errors.FloodWaitError as err:
                self.flood_waits += 1
                if self.flood_waits > MAX_FLOOD_WAITS_PER_CHAT:
                    raise TwinError(
                        f"telegram keeps asking to wait (flood control) in {_label(self.chat)}:"
                        " run `twin ingest telegram` again later; it resumes where it stopped"
                    ) from None
                log(f"telegram asks to wait {err.seconds} s (flood control), sleeping…")
                await sleep(err.seconds)
                # Loop: re-query from the highest stored id, which _read_from just committed.

    async def _read_from(self, min_id: int) -> None:
        """Store messages above `min_id`, oldest first, a transaction per batch."""
        batch: list[Message] = []
        try:
            async for raw in self._history(min_id):
                message = self._converted(raw)
                if message is None:
                    continue
                if self.voice is not None and message.media_type in SPOKEN_MEDIA:
                    message, later = await self.voice.heard(self.client, raw, message)
                    if later:
                        self.passed_over.append(message.message_id)
                batch.append(message)
                if len(batch) >= self.batch_size:
                    self._commit(batch)
                    batch = []
        except errors.FloodWaitError:
            # What arrived before the wait is complete and in order: keep it, so the retry
            # starts above it instead of downloading it again.
            self._commit(batch)
            raise
        self._commit(batch)

    def _history(self, min_id: int) -> AsyncIterator[Any]:
        if self.wait_time is None:
            return self.client.iter_messages(self.entity, min_id=min_id, reverse=True)
        return self.client.iter_messages(  # type: ignore[call-arg]
            self.entity, min_id=min_id, reverse=True, wait_time=self.wait_time
        )

    def _commit(self, batch: list[Message]) -> None:
        if not batch:
            return
        with self.store.transaction():
            self.added += self.store.add_messages(batch)
            chat_id = self.chat.chat_id
            self.store.add_voice_files((chat_id, m, "") for m in self.passed_over)
        self.passed_over.clear()

    async def _hear_passed_over(self, voice: VoiceDownloads) -> None:
        """The voice messages earlier pulls passed over, downloaded and heard first (oldest
        first) while the budget lasts; what is passed over again waits for the next pull."""
        waiting = self.store.voice_in_telegram(self.chat.chat_id)
        if not waiting:
            return
        found = await self.client.get_messages(self.entity, ids=waiting)
        for message_id, raw in zip(waiting, found or [], strict=False):
            message = None if raw is None else self._converted(raw)
            if message is None or message.media_type not in SPOKEN_MEDIA:
                self.store.forget_voice_file(self.chat.chat_id, message_id)  # deleted since
                continue
            heard, later = await voice.heard(self.client, raw, message)
            with self.store.transaction():
                if heard.spoken:
                    self.store.set_spoken(self.chat.chat_id, message_id, heard.text)
                elif not later:
                    self.store.forget_voice_file(self.chat.chat_id, message_id)

    def _converted(self, raw: Any) -> Message | None:
        return message_from_telethon(
            self.chat.chat_id, raw, owner_id=self.owner.user_id, names=self.names
        )


class VoiceDownloads:
    """The pull's voice messages as words: each downloaded (within `[voice]`'s budget: its
    length and the MB a pull may download) and transcribed on a worker thread, so the
    connection to Telegram keeps going meanwhile. What a pull passes over (the budget spent,
    a failed download) waits in the store's `voice_files`, and the next pull of its chat
    downloads it before anything new."""

    def __init__(self, voice: Voice, settings: VoiceConfig) -> None:
        self.voice = voice
        self.max_seconds = settings.max_seconds
        self.bytes_left = settings.pull_budget_mb * 1024 * 1024

    async def heard(
        self, client: HistoryClient, raw: Any, message: Message
    ) -> tuple[Message, bool]:
        """`message` as what was said in it, or as it is (its placeholder) when it cannot be
        heard, the reason counted in the voice tally; and whether a later pull should try
        again (the budget was spent, or the download failed)."""
        if message.text:
            return message, False  # a caption: the words the sender chose to write
        tally = self.voice.tally
        if not self.voice.listening():  # no model that loads: a later pull may have one
            return message, True
        size, seconds = _sound_of(raw.media)
        if seconds > self.max_seconds:
            tally.keep(TOO_LONG)
            return message, False
        if size > self.bytes_left:
            tally.keep(OVER_BUDGET)
            return message, True
        self.bytes_left -= size
        try:
            data = await client.download_media(raw, file=bytes)
        except errors.FloodWaitError:
            raise  # waited out by the chat's pull, which then reads this message again
        except (errors.RPCError, OSError, ValueError):
            data = None
        if not isinstance(data, bytes):
            tally.keep(NOT_DOWNLOADED)
            return message, True
        heard = await self.voice.heard_in_thread(data)
        if heard is None:
            return message, False
        return message._replace(text=heard, spoken=True), False


def _sound_of(media: Any) -> tuple[int, float]:
    """A voice or round video message's size in bytes and length in seconds (0 if unsaid)."""
    document = getattr(media, "document", None)
    if not isinstance(document, types.Document):
        return 0, 0.0
    seconds = 0.0
    for attribute in document.attributes:
        if isinstance(attribute, types.DocumentAttributeAudio | types.DocumentAttributeVideo):
            seconds = float(attribute.duration or 0)
    return int(document.size or 0), seconds


# --- the real entry point (needs the network; kept thin) ---------------------------------


def telegram_session(config: Config) -> Path:
    """Telethon's login to the owner's account (0600 in the data dir)."""
    return config.data_dir / "telegram.session"


def can_pull_unattended(config: Config) -> bool:
    """Whether `run_pull(interactive=False)` can run: credentials set and logged in once."""
    session = telegram_session(config)
    has_credentials = bool(os.environ.get("TWIN_API_ID") and os.environ.get("TWIN_API_HASH"))
    return has_credentials and session.exists() and session.stat().st_size > 0


def run_pull(
    config: Config, *, takeout: bool | None = None, interactive: bool = True
) -> PullSummary:
    """`twin ingest telegram`: log in (interactively the first time) and pull new messages.

    `takeout` None follows `[ingest] takeout`; True or False overrides it. With `interactive`
    False (the nightly retrain) a machine that is not logged in is an error, never a prompt.
    """
    api_id_text = secret("TWIN_API_ID", "your app's api_id from https://my.telegram.org")
    try:
        api_id = int(api_id_text)
    except ValueError:
        raise TwinError("TWIN_API_ID must be a number (the api_id from my.telegram.org)") from None
    api_hash = secret("TWIN_API_HASH", "your app's api_hash from https://my.telegram.org")
    use_takeout = config.ingest.takeout if takeout is None else takeout
    ensure_private_dir(config.data_dir)
    session_path = telegram_session(config)
    # The session is a login to the owner's account: private before Telethon writes a byte.
    make_private_file(session_path)
    try:
        return asyncio.run(_pull(config, session_path, api_id, api_hash, use_takeout, interactive))
    except errors.ApiIdInvalidError:
        raise TwinError("Telegram rejected TWIN_API_ID / TWIN_API_HASH: check both") from None
    except errors.FloodWaitError as err:
        raise TwinError(
            f"telegram asks to wait {err.seconds} s (flood control): try again later"
        ) from None
    except ConnectionError as err:
        raise TwinError(f"could not reach Telegram ({err}): check the connection") from None


async def _pull(
    config: Config,
    session_path: Path,
    api_id: int,
    api_hash: str,
    use_takeout: bool,
    interactive: bool,
) -> PullSummary:
    client = TelegramClient(str(session_path), api_id, api_hash)
    try:
        if interactive:
            await client.start(
                phone=lambda: input("phone number (international format): "),
                password=lambda: getpass.getpass("2FA password: "),
            )
        else:
            await client.connect()
            if not await client.is_user_authorized():
                raise TwinError(
                    "this machine is not logged in to Telegram (or the login expired): "
                    "run `twin ingest telegram` once in a terminal"
                )
        os.chmod(session_path, 0o600)
        with open_store(config.store_path) as store:
            voice = (
                VoiceDownloads(voice_for(config, store), config.voice)
                if config.voice.enabled
                else None
            )
            if not use_takeout:
                return await pull_history(
                    client,
                    store,
                    include=config.ingest.include_chats,
                    exclude=config.ingest.exclude_chats,
                    voice=voice,
                )
            return await _pull_in_takeout(client, store, config, voice)
    finally:
        await client.disconnect()


async def _pull_in_takeout(
    client: TelegramClient, store: Store, config: Config, voice: VoiceDownloads | None
) -> PullSummary:
    try:
        # files: voice messages are downloaded (within [voice] pull_budget_mb) when voice is on.
        async with client.takeout(
            finalize=True,
            users=True,
            chats=True,
            megagroups=True,
            channels=False,
            files=voice is not None,
            max_file_size=voice.bytes_left if voice is not None else None,
        ) as takeout_client:
            # Takeout requests have laxer flood limits: no need for Telethon's polite pause.
            return await pull_history(
                takeout_client,
                store,
                include=config.ingest.include_chats,
                exclude=config.ingest.exclude_chats,
                wait_time=0,
                voice=voice,
            )
    except errors.TakeoutInitDelayError:
        raise TwinError(
            "Telegram wants you to confirm the data export: accept the request in your"
            " Telegram app (Service Notifications), then run `twin ingest telegram` again"
        ) from None
