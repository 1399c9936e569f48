"""Who may reach which handler, as python-telegram-bot filters.

The twin learned from the owner's private chats, so model output goes only to people the
owner listed: `[telegram] allowed_users` and `admins` in private chats, and in the listed
groups only when someone mentions the bot or replies to it (the rest of such a group's talk,
when Telegram delivers it, is remembered as context). Everyone else gets at most the
fixed stranger notice. Only admins reach /persona, and only in a private chat with the bot,
where its answers (adapter metrics, samples) are seen by nobody else.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Message, MessageEntity
from telegram.ext import filters

from twin.config import TelegramConfig


class _AddressesTheBot(filters.MessageFilter):
    """A group message that mentions the bot (@username) or replies to one of its messages."""

    def filter(self, message: Message) -> bool:
        bot = message.get_bot()
        replied = message.reply_to_message
        if replied is not None and replied.from_user is not None and replied.from_user.id == bot.id:
            return True
        mention = f"@{bot.username}".lower()
        kinds: list[str | None] = [MessageEntity.MENTION]
        entities = message.parse_entities(kinds) or message.parse_caption_entities(kinds)
        return any(text.lower() == mention for text in entities.values())


@dataclass(frozen=True)
class Access:
    talkers: filters.BaseFilter  # may get the twin's replies
    overheard: filters.BaseFilter  # allowed groups' other messages: context, not answered
    admins: filters.BaseFilter  # may use /persona
    strangers: filters.BaseFilter  # private chats of anyone else


def access_filters(settings: TelegramConfig) -> Access:
    friends = filters.User(user_id=set(settings.allowed_users) | set(settings.admins))
    private = filters.ChatType.PRIVATE
    groups = filters.ChatType.GROUPS & filters.Chat(chat_id=settings.allowed_chats)
    addressed = _AddressesTheBot()
    return Access(
        talkers=(private & friends) | (groups & addressed),
        overheard=groups & ~addressed,
        admins=private & filters.User(user_id=settings.admins),
        strangers=private & ~friends,
    )
