"""Typed configuration: defaults, the documented example, and errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twin.config import config_from_dict, load_config, secret
from twin.errors import TwinError

REPO = Path(__file__).resolve().parents[1]


def test_example_config_documents_exactly_the_defaults() -> None:
    example = load_config(REPO / "config.toml")
    defaults = config_from_dict({}, REPO / "config.toml")
    assert example == defaults


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "twin.toml"
    path.parent.mkdir()
    path.write_text('[paths]\ndata_dir = "state"\n[ingest]\nexports = ["exports/result.json"]\n')
    config = load_config(path)
    assert config.data_dir == tmp_path / "conf" / "state"
    assert config.ingest.exports == (tmp_path / "conf" / "exports" / "result.json",)
    assert config.store_path == tmp_path / "conf" / "state" / "twin.db"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"dataset": {"max_tokenz": 5}}, "[dataset] has no key 'max_tokenz'"),
        ({"dataset": {"max_tokens": "5"}}, "[dataset] max_tokens must be an integer"),
        ({"ingest": {"takeout": "yes"}}, "[ingest] takeout must be true or false"),
        ({"ingest": {"include_chats": "Family"}}, "[ingest] include_chats must be a list"),
        ({"telegramm": {}}, "unknown section [telegramm]"),
        ({"dataset": {"session_gap_minutes": 1}}, "session_gap_minutes must be greater"),
        ({"dataset": {"eval_fraction": 1.5}}, "eval_fraction must be in [0, 1)"),
    ],
)
def test_errors_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(TwinError, match=re.escape(message)):
        config_from_dict(raw, Path("config.toml"))


def test_chat_lists_accept_ids_as_numbers() -> None:
    config = config_from_dict({"ingest": {"include_chats": [12345, "Family"]}})
    assert config.ingest.include_chats == ("12345", "Family")


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
