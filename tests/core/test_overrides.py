"""The admins' overrides (`/persona set`): validated like config.toml, saved in settings.json,
and a bad saved value reported and ignored, never served."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from twin.core.config import config_from_dict
from twin.core.errors import TwinError
from twin.core.loading import load_config
from twin.core.overrides import SETTABLE, save_override, with_override


def test_overrides_from_telegram_are_validated_and_saved(tmp_path: Path) -> None:
    config = config_from_dict({"paths": {"data_dir": str(tmp_path)}})
    changed = with_override(config, "generation", "temperature", "0.5", where="/persona")
    assert changed.generation.temperature == 0.5
    save_override(changed, "generation", "temperature")
    assert json.loads(changed.overrides_path.read_text()) == {"generation": {"temperature": 0.5}}
    for value, why in [("hot", "must be a number"), ("nan", "finite"), ("9", "<= 5.0")]:
        with pytest.raises(TwinError, match=why):
            with_override(config, "generation", "temperature", value, where="/persona")
    with pytest.raises(TwinError, match="cannot be set here"):
        with_override(config, "model", "base", "gpt2")
    assert set(SETTABLE) == {"generation", "bot", "business", "persona"}
    changed = with_override(config, "business", "mode", "auto", where="/persona")
    assert changed.business.mode == "auto"
    with pytest.raises(TwinError, match="draft"):
        with_override(config, "business", "mode", "sometimes", where="/persona")


def test_a_bad_value_in_settings_json_is_reported_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[paths]\ndata_dir = "data"\n')
    (tmp_path / "data").mkdir()
    saved = {
        "generation": {"repetition_penalty": "NaN", "temperature": 0.3, "max_new_tokens": 10**9},
        "bot": {"line_pause_per_char": "Infinity"},
    }
    (tmp_path / "data" / "settings.json").write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING):
        config = load_config(path)
    assert config.generation.temperature == 0.3  # the good value applies
    assert config.generation.repetition_penalty == 1.1  # the bad ones do not
    assert config.generation.max_new_tokens == 64
    assert config.bot.line_pause_per_char == 0.03
    assert "repetition_penalty" in caplog.text and "ignored" in caplog.text
    (tmp_path / "data" / "settings.json").write_text("{not json")
    assert load_config(path).generation.temperature == 0.8
