"""The owner's language: twin's built-in texts follow it; the owner's own texts never change."""

from __future__ import annotations

from pathlib import Path

from ingest.store import Chat, Message, Owner, Store
from twin.core.config import config_from_dict
from twin.core.conversation import persona_prompt
from twin.core.language import TEXTS, detect_language, localized, phrase


def test_language_is_read_from_the_owners_letters() -> None:
    assert detect_language(["щас буду", "норм)))", "ok"]) == "ru"
    assert detect_language(["ok ok", "see u", "да"]) == "en"
    assert detect_language([]) == "en"


def test_only_twins_own_defaults_are_translated() -> None:
    default = TEXTS["en"]["stranger_reply"]
    assert localized(default, "stranger_reply", "ru") == TEXTS["ru"]["stranger_reply"]
    assert localized("Not now, sorry.", "stranger_reply", "ru") == "Not now, sorry."
    assert localized(default, "stranger_reply", "en") == default
    assert phrase("ru", "memory_cleared") == "Память этого чата очищена."


def test_persona_prompt_in_the_owners_language() -> None:
    config = config_from_dict({})
    assert persona_prompt(config, "Аня", "ru") == (
        "Ты — Аня. Отвечай в этом чате Telegram так, как ответил бы Аня."
    )
    assert persona_prompt(config, None, "en").startswith("You are the owner.")
    own = config_from_dict({"persona": {"system_prompt": "Be {name}, briefly."}})
    assert persona_prompt(own, "Аня", "ru") == "Be Аня, briefly."


def test_the_store_knows_the_owners_language(store: Store, tmp_path: Path) -> None:
    rows = [
        Message(
            1,
            n,
            1_700_000_000 + n,
            7 if n % 2 else 8,
            "Аня" if n % 2 else "Катя",
            "message",
            None,
            text,
        )
        for n, text in enumerate(["привет", "щас буду, норм", "ок", "ахах ну да"], start=1)
    ]
    with store.transaction():
        store.save_chat(Chat(1, "Катя", "personal_chat"))
        store.add_messages(rows)
        store.set_owner(Owner(7, "Аня"))
    assert store.owner_language() == "ru"
    assert store.owner_language("en") == "en"  # [persona] language set: it wins
