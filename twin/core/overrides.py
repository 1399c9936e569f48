"""The admins' overrides: values `/persona set` and `/persona prompt` save over config.toml.

They live in data_dir/settings.json (the file keeps its old name), and every command applies
them (`twin.core.loading.load_config`), so training uses the prompt that serving uses. An
override is validated exactly like config.toml (types, ranges, finiteness). A settings.json
that holds a bad value (written by an older twin, or by hand) is reported and that value is
ignored: it must never be served, and never keep the bot from starting.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from twin.core.config import Config
from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir, write_private_text

log = logging.getLogger(__name__)

# The keys an admin may override, by config section.
SETTABLE = {
    "generation": (
        "max_new_tokens",
        "temperature",
        "top_p",
        "repetition_penalty",
        "memory_guidance",
    ),
    "bot": ("line_pause_per_char", "max_line_pause"),
    "business": ("mode",),
    "persona": ("system_prompt",),
}


def settable_keys() -> list[str]:
    return [key for keys in SETTABLE.values() for key in keys]


def with_overrides(config: Config) -> Config:
    """`config` with data_dir/settings.json applied; bad entries are logged and skipped."""
    path = config.overrides_path
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return config
    except (ValueError, OSError) as err:
        log.warning("%s is unreadable (%s): ignored, config.toml applies", path, type(err).__name__)
        return config
    if not isinstance(saved, dict):
        log.warning("%s is not a JSON object: ignored, config.toml applies", path)
        return config
    for section, values in saved.items():
        if not isinstance(values, dict):
            log.warning("%s: [%s] is not an object: ignored", path.name, section)
            continue
        for key, value in values.items():
            try:
                config = with_override(config, section, key, value, where=path.name)
            except TwinError as err:
                log.warning("%s (ignored; config.toml's value applies)", err)
    return config


def with_override(
    config: Config, section: str, key: str, value: Any, *, where: str = "setting"
) -> Config:
    """`config` with one settable key changed, validated like config.toml.

    `value` may be a string as typed in Telegram ("0.7"); it is converted to the key's type.
    """
    if key not in SETTABLE.get(section, ()):
        raise TwinError(
            f"{where}: {key} cannot be set here (settable: {', '.join(settable_keys())})"
        )
    current = getattr(getattr(config, section), key)
    if (
        isinstance(value, str)
        and isinstance(current, int | float)
        and not isinstance(current, bool)
    ):
        value = _number(
            value, int if isinstance(current, int) else float, f"{where}: [{section}] {key}"
        )
    try:
        return config.with_section(section, **{key: value})
    except TwinError as err:
        raise TwinError(f"{where}: {str(err).split(': ', 1)[-1]}") from None


def _number(text: str, kind: type, label: str) -> int | float:
    try:
        return kind(text.strip())  # type: ignore[no-any-return]
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise TwinError(f"{label} must be {noun}, got {text!r}") from None


def save_override(config: Config, section: str, key: str) -> None:
    """Persist `config`'s value of one settable key into data_dir/settings.json."""
    path = config.overrides_path
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    saved.setdefault(section, {})[key] = getattr(getattr(config, section), key)
    ensure_private_dir(path.parent)
    write_private_text(path, json.dumps(saved, indent=2, ensure_ascii=False) + "\n")
