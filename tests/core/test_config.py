"""Typed configuration: defaults, the documented example, and errors that name the key."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from annotated_types import Ge, Gt, Le, Lt

from tests.helpers import REPO
from twin.core.config import SECTIONS, Config, config_from_dict, secret
from twin.core.errors import TwinError
from twin.core.loading import load_config


def test_example_config_documents_exactly_the_defaults() -> None:
    example = load_config(REPO / "config.toml")
    defaults = config_from_dict({}, REPO / "config.toml")
    assert example == defaults


def test_example_config_and_schema_have_the_same_keys_each_with_a_comment() -> None:
    """config.toml is the schema's documentation: every key is in it, nothing else is, and
    each key has a comment line somewhere above it in its section."""
    text = (REPO / "config.toml").read_text()
    written = tomllib.loads(text)
    for section in SECTIONS:
        fields = type(getattr(Config(), section)).model_fields
        assert set(written[section]) == set(fields), section
    assert set(written) == set(SECTIONS)
    for section in SECTIONS:
        block = text.split(f"[{section}]\n", 1)[1].split("\n[", 1)[0]
        assert "#" in block, f"[{section}] has no comment"


def test_readme_names_every_key() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("| section | keys (defaults) |", 1)[1].split("\n\n", 1)[0]
    for section in SECTIONS:
        row = next(line for line in table.splitlines() if line.startswith(f"| `[{section}]`"))
        for key in type(getattr(Config(), section)).model_fields:
            assert f"`{key}`" in row, f"README's configuration table lacks [{section}] {key}"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "twin.toml"
    path.parent.mkdir()
    path.write_text(
        '[paths]\ndata_dir = "state"\n[ingest]\nexports = ["exports/result.json"]\n'
        '[serving]\ngguf = "models/base.gguf"\n'
    )
    config = load_config(path)
    assert config.data_dir == tmp_path / "conf" / "state"
    assert config.ingest.exports == (tmp_path / "conf" / "exports" / "result.json",)
    assert config.serving.gguf == str(tmp_path / "conf" / "models" / "base.gguf")
    assert config.store_path == tmp_path / "conf" / "state" / "twin.db"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"dataset": {"max_tokenz": 5}}, "[dataset] max_tokenz is not a known key"),
        ({"dataset": {"max_tokens": "5"}}, "[dataset] max_tokens must be an integer, got '5'"),
        ({"ingest": {"takeout": "yes"}}, "[ingest] takeout must be true or false"),
        ({"ingest": {"include_chats": "Family"}}, "[ingest] include_chats must be a list"),
        ({"telegramm": {}}, "unknown section [telegramm]"),
        ({"dataset": {"session_gap_minutes": 1}}, "session_gap_minutes must be greater"),
        ({"dataset": {"eval_fraction": 1.5}}, "[dataset] eval_fraction must be < 1.0, got 1.5"),
        ({"dataset": {"phone_regions": ["XX"]}}, "phone_regions: 'XX' is not a region code"),
        ({"generation": {"temperature": math.nan}}, "temperature must be a finite number"),
        ({"bot": {"line_pause_per_char": math.inf}}, "line_pause_per_char must be a finite"),
        ({"generation": {"max_new_tokens": 10**9}}, "max_new_tokens must be <= 4096"),
        ({"model": {"quantization": "q8"}}, "[model] quantization must be one of"),
        ({"telegram": {"api_base_url": "api.telegram.org"}}, "api_base_url must be an http"),
        ({"schedule": {"retrain_cron": "3am"}}, "retrain_cron '3am' is not a crontab line"),
        ({"bot": {"context_tokens": 100}}, "leaves 36 tokens; the persona system prompt"),
        (
            {"persona": {"system_prompt": "Be {name}. " + "Stay in character. " * 200}},
            "the persona system prompt, the memory block and one message need about",
        ),
    ],
)
def test_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(TwinError, match=re.escape(message)):
        config_from_dict(raw, Path("config.toml"))


def _bounds(section: str, key: str) -> list[float]:
    """Values just outside each documented bound of a numeric key."""
    field = type(getattr(Config(), section)).model_fields[key]
    out: list[float] = []
    for rule in field.metadata:
        if isinstance(rule, Ge | Gt):
            limit = rule.ge if isinstance(rule, Ge) else rule.gt
            out.append(
                limit - 1 if isinstance(limit, int) and field.annotation is int else limit - 0.5
            )
        if isinstance(rule, Le | Lt):
            limit = rule.le if isinstance(rule, Le) else rule.lt
            out.append(limit + 1 if field.annotation is int else limit + 0.5)
    return out


NUMERIC = [
    (section, key)
    for section in SECTIONS
    for key, field in type(getattr(Config(), section)).model_fields.items()
    if field.annotation in (int, float)
]


@pytest.mark.parametrize(("section", "key"), NUMERIC)
def test_every_numeric_setting_has_a_finite_documented_range(section: str, key: str) -> None:
    bounds = _bounds(section, key)
    assert len(bounds) == 2, f"[{section}] {key} needs a lower and an upper bound"
    for value in bounds:
        with pytest.raises(TwinError, match=re.escape(f"[{section}] {key} must be")):
            config_from_dict({section: {key: value}})
    field = type(getattr(Config(), section)).model_fields[key]
    if field.annotation is float:
        for value in (math.nan, math.inf, -math.inf):
            with pytest.raises(TwinError, match="must be a finite number"):
                config_from_dict({section: {key: value}})


def test_chat_lists_accept_ids_as_numbers() -> None:
    config = config_from_dict({"ingest": {"include_chats": [12345, "Family"]}})
    assert config.ingest.include_chats == ("12345", "Family")


def test_bot_api_url_in_either_spelling() -> None:
    for url in ("http://127.0.0.1:8081", "http://127.0.0.1:8081/", "http://127.0.0.1:8081/bot"):
        config = config_from_dict({"telegram": {"api_base_url": url}})
        assert config.telegram.api_root == "http://127.0.0.1:8081"


def test_bad_toml_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[paths\n")
    with pytest.raises(TwinError, match="not valid TOML"):
        load_config(path)


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TWIN_API_HASH", raising=False)
    with pytest.raises(TwinError, match="TWIN_API_HASH is not set"):
        secret("TWIN_API_HASH", "Telethon login")
    monkeypatch.setenv("TWIN_API_HASH", "abc")
    assert secret("TWIN_API_HASH", "Telethon login") == "abc"
