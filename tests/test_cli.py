"""The `twin` command's own behaviour: logging that cannot leak secrets, defaults."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from twin.cli import main


def test_libraries_log_at_warning_so_urls_with_tokens_never_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[paths]\ndata_dir = "d"\n')
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["messages"], status["examples"], status["adapter"]) == (0, 0, None)
    assert not (tmp_path / "d").exists()  # status creates nothing
    # httpx logs each request URL at INFO; a Bot API URL carries the bot token.
    assert logging.getLogger("httpx").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("trainer.train").getEffectiveLevel() == logging.INFO


def test_missing_explicit_config_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "status"]) == 1
    assert "config file not found" in capsys.readouterr().err
