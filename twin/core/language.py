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
    },
    "ru": {
        "system_prompt": "Ты — {name}. Отвечай в этом чате Telegram так, как ответил бы {name}.",
        "stranger_reply": "Извините, здесь я общаюсь только со знакомыми.",
        "memory_cleared": "Память этого чата очищена.",
        "remembered": "Что ты уже говорил в этом чате:",
        "remembered_all": "Что ты уже говорил:",
        "profile": "О тебе:",
        "owner": "владелец",
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
