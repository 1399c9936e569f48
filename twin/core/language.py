"""The owner's language: the defaults twin speaks in, for the persona prompt, the memory block
and the bot's few fixed messages.

`[persona] language = "auto"` picks it from the script most of the owner's own messages are
written in (Cyrillic: Russian; otherwise English). A text the owner set in config.toml (a prompt,
a stranger reply) is always used as written; only twin's built-in English defaults are
replaced by their translation.
"""

from __future__ import annotations

from collections.abc import Iterable

LANGUAGES = ("en", "ru")

TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "system_prompt": "You are {name}. Reply to this Telegram chat exactly as {name} would.",
        "stranger_reply": "Sorry, I only talk to people I know here.",
        "memory_cleared": "Memory of this chat cleared.",
        "remembered": "What you said before in this chat:",
        "remembered_all": "What you said before:",
        "profile": "About you:",
        "owner": "the owner",
        # Telegram Business drafts, in the owner's chat with the bot (bot.drafts); a closed
        # draft's line is "draft_" + what became of it (bot.business_log.Outcome).
        "draft_notice": "{friend} wrote:\n{asked}\n\nDraft reply:\n{draft}",
        "draft_send": "Send",
        "draft_edit": "Edit: reply to this with your text",
        "draft_skip": "Skip",
        "draft_sent": "Sent.",
        "draft_edited": "Sent your text.",
        "draft_skipped": "Skipped.",
        "draft_expired": "Expired: Telegram's 24-hour window to reply has closed.",
        "draft_deleted": "Dropped: they deleted their message.",
        "draft_taken_over": "Dropped: you answered yourself.",
        "draft_replaced": "Replaced by a newer draft below.",
        "draft_edit_hint": "Reply to the draft with the text to send instead.",
        "draft_not_yours": "Only the owner's presses count.",
        "draft_done": "Already handled.",
        "draft_failed": "Could not send it ({why}); the draft is still here.",
        "draft_partly_sent": "Only partly sent ({why}): the rest did not go out.",
        "business_ready": (
            "Connected to your Telegram account. Replies in your chats: {mode}. "
            "/persona business shows and changes it."
        ),
        "business_disabled": (
            "The Telegram Business connection is off: I do not answer in your chats. To turn "
            "it on: Telegram -> Settings -> Telegram Business -> Chatbots."
        ),
        "business_cannot_reply": (
            "I can read your chats but may not reply in them: in Telegram -> Settings -> "
            "Telegram Business -> Chatbots -> this bot, allow it to reply to messages."
        ),
        "mode_draft": "drafts you approve here first",
        "mode_auto": "sent as you, without asking",
        "mode_off": "none",
    },
    "ru": {
        "system_prompt": "Ты — {name}. Отвечай в этом чате Telegram так, как ответил бы {name}.",
        "stranger_reply": "Извините, здесь я общаюсь только со знакомыми.",
        "memory_cleared": "Память этого чата очищена.",
        "remembered": "Что ты уже говорил в этом чате:",
        "remembered_all": "Что ты уже говорил:",
        "profile": "О тебе:",
        "owner": "владелец",
        "draft_notice": "{friend} пишет:\n{asked}\n\nЧерновик ответа:\n{draft}",
        "draft_send": "Отправить",
        "draft_edit": "Изменить: ответьте на это своим текстом",
        "draft_skip": "Пропустить",
        "draft_sent": "Отправлено.",
        "draft_edited": "Отправлен ваш текст.",
        "draft_skipped": "Пропущено.",
        "draft_expired": "Истёк: 24 часа, в которые Telegram разрешает ответить, прошли.",
        "draft_deleted": "Отменён: собеседник удалил своё сообщение.",
        "draft_taken_over": "Отменён: вы ответили сами.",
        "draft_replaced": "Заменён новым черновиком ниже.",
        "draft_edit_hint": "Ответьте на черновик текстом, который отправить вместо него.",
        "draft_not_yours": "Нажимать может только владелец.",
        "draft_done": "Уже сделано.",
        "draft_failed": "Не удалось отправить ({why}); черновик остался.",
        "draft_partly_sent": "Отправлено не целиком ({why}): остальное не ушло.",
        "business_ready": (
            "Подключено к вашему аккаунту Telegram. Ответы в ваших чатах: {mode}. "
            "/persona business покажет и изменит это."
        ),
        "business_disabled": (
            "Подключение Telegram Business выключено: я не отвечаю в ваших чатах. Включить: "
            "Telegram -> Настройки -> Telegram для бизнеса -> Чат-боты."
        ),
        "business_cannot_reply": (
            "Я вижу ваши чаты, но не могу в них отвечать: в Telegram -> Настройки -> Telegram "
            "для бизнеса -> Чат-боты -> этот бот разрешите отвечать на сообщения."
        ),
        "mode_draft": "черновики, которые вы сначала одобряете здесь",
        "mode_auto": "отправляются от вашего имени без вопросов",
        "mode_off": "нет",
    },
}


def phrase(language: str, key: str) -> str:
    return TEXTS.get(language, TEXTS["en"])[key]


def localized(value: str, key: str, language: str) -> str:
    """`value` as configured, unless it is twin's English default: then the translation."""
    return phrase(language, key) if value == TEXTS["en"][key] else value


def detect_language(texts: Iterable[str]) -> str:
    """The language of the owner's messages: Russian when most of their letters are
    Cyrillic, else English (twin's only other set of defaults)."""
    cyrillic = latin = 0
    for message in texts:
        for char in message:
            if "\u0400" <= char <= "\u04ff":
                cyrillic += 1
            elif char.isascii() and char.isalpha():
                latin += 1
    return "ru" if cyrillic > latin else "en"
