"""Who may reach which handler, as python-telegram-bot filters.

The twin learned from the owner's private chats, so model output goes only to people the
owner listed: `[telegram] allowed_users` and `admins` in private chats; in the listed groups
(`allowed_chats`) only when someone mentions the bot or replies to it, and by default only when
that someone is listed too (`group_members = "listed"`; "everyone" answers any member). The
rest of such a group's talk, when Telegram delivers it, is remembered as context. Everyone
else gets at most the fixed stranger notice. Only admins reach /persona, and only in a private
chat with the bot, where its answers (adapter metrics, samples) are seen by nobody else. /reset
clears a private chat's log for its own user, and a group's only for admins.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Message, MessageEntity
from telegram.ext import filters

from twin.core.config import TelegramConfig


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
    resetters: filters.BaseFilter  # may /reset the conversation they write in
    strangers: filters.BaseFilter  # private chats of anyone else


def access_filters(telegram_config: TelegramConfig) -> Access:
    friends = filters.User(user_id=set(telegram_config.allowed_users) | set(telegram_config.admins))
    admins = filters.User(user_id=telegram_config.admins)
    private = filters.ChatType.PRIVATE
    groups = filters.ChatType.GROUPS & filters.Chat(chat_id=telegram_config.allowed_chats)
    addressed = _AddressesTheBot()
    answered_in_groups = groups & addressed
    if telegram_config.group_members == "listed":
        answered_in_groups = answered_in_groups & friends
    talkers = (private & friends) | answered_in_groups
    return Access(
        talkers=talkers,
        overheard=groups & ~answered_in_groups,
        admins=private & admins,
        resetters=(private & friends) | (groups & admins),
        strangers=private & ~friends,
    )
