"""What the twin reads of a Telegram message: its text, or the placeholder of its media, as
the store holds it (ingest) and the twin was trained on."""

from __future__ import annotations

from telegram import Message

from twin.core.conversation import media_placeholder, spoken

# Bot API message fields -> the store's media types, whose placeholders the twin was trained on.
MEDIA_FIELDS = {
    "photo": "photo",
    "sticker": "sticker",
    "voice": "voice_message",
    "video_note": "video_message",
    "video": "video_file",
    "animation": "animation",
    "audio": "audio_file",
    "document": "file",
    "location": "location",
    "contact": "contact",
    "poll": "poll",
}


def text_of(message: Message, *, media: str, heard: str | None = None) -> str | None:
    """What the twin reads of a message: its text, a caption, what was said in it (`heard`:
    a voice message's transcript, bot.voice) marked as spoken, or "[sticker]"-style
    placeholder (when `[bot] media` is "model"); None for what it should not answer at all.
    Words said are answered whatever `[bot] media` says: they are no media to the twin."""
    if heard:
        return spoken(media_type_of(message) or "voice_message", heard)
    text = message.text or message.caption
    if text:
        username = message.get_bot().username
        if username and message.chat.type != "private":
            text = text.replace(f"@{username}", "").strip() or text
        return text
    media_type = media_type_of(message)
    if media != "model" or media_type is None:
        return None  # also service messages, dice, games...: nothing to answer
    return media_placeholder(media_type)


def media_type_of(message: Message) -> str | None:
    """The store's media type of a message ("photo", "sticker"...), None for plain text."""
    for attribute, media_type in MEDIA_FIELDS.items():
        if getattr(message, attribute, None):
            return media_type
    return None
