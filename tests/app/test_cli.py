"""The `twin` command's own behaviour: logging that cannot leak secrets, defaults."""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from twin.app.cli import _parser, main


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


def test_status_survives_damaged_adapters_and_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[paths]\ndata_dir = "d"\n')
    adapters = tmp_path / "d" / "adapters"
    for version, metrics in (("20261101-030000", "{}"), ("20261102-030000", '{"created": 1')):
        (adapters / version).mkdir(parents=True)
        (adapters / version / "metrics.json").write_text(metrics)
    (adapters / "CURRENT").write_bytes(b"\xff\xfe\x00garbage")
    assert main(["--config", str(config), "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["adapter"] is None and status["adapters"] == []
    assert status["adapter_problem"].endswith("CURRENT is damaged (not a version name)")
    assert "20261101-030000: metrics.json is damaged (no steps" in caplog.text
    assert "20261102-030000: metrics.json is damaged (JSONDecodeError)" in caplog.text
    assert main(["--config", str(config), "status"]) == 0
    assert "CURRENT is damaged" in capsys.readouterr().out


def test_status_says_what_memory_guidance_decodes_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[paths]\ndata_dir = "d"\n[generation]\nmemory_guidance = 1.5\n')
    assert main(["--config", str(config), "status"]) == 0
    assert "memory guidance: 1.5 (" in capsys.readouterr().out
    # The openai engine decodes on its server, plainly: say so, whatever the config holds.
    config.write_text(
        '[paths]\ndata_dir = "d"\n[serving]\nengine = "openai"\nurl = "http://127.0.0.1:8000/v1"\n'
    )
    assert main(["--config", str(config), "status"]) == 0
    assert (
        "memory guidance: off with the openai engine (vLLM/SGLang have no such decoding; "
        "the transformers and llama.cpp engines do it)"
    ) in capsys.readouterr().out.splitlines()
    assert main(["--config", str(config), "status", "--json"]) == 0
    guidance = json.loads(capsys.readouterr().out)["memory_guidance"]
    assert (guidance["configured"], guidance["applied"], guidance["engine"]) == (2.0, 0.0, "openai")


def test_missing_explicit_config_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "status"]) == 1
    assert "config file not found" in capsys.readouterr().err


def readme_commands() -> list[str]:
    """Every `twin ...` command line the README shows (code blocks and inline code)."""
    text = (REPO / "README.md").read_text()
    found = re.findall(r"`((?:\.venv/bin/)?twin [^`]+)`", text)
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        found += [line.split(" #")[0].strip() for line in block.splitlines()]
    commands = {c.strip() for c in found if re.match(r"(\.venv/bin/)?twin ", c.strip())}
    # Synopses with [optional] parts and ... are grammar, not command lines.
    return sorted(c for c in commands if "[" not in c and "..." not in c)


EXAMPLE_VALUES = {"CHAT_ID": "-1001234567890"}


def test_every_command_line_in_the_readme_parses() -> None:
    commands = readme_commands()
    assert len(commands) >= 12, commands
    parser = _parser()
    for command in commands:
        # Placeholders stand for what a user types there.
        args = [EXAMPLE_VALUES.get(word, word) for word in shlex.split(command)[1:]]
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"README's `{command}` does not parse")


def test_config_goes_before_or_after_the_command(tmp_path: Path) -> None:
    parser = _parser()
    for args in (
        ["--config", "a.toml", "chat"],
        ["chat", "--config", "a.toml"],
        ["ingest", "export", "x.json", "--config", "a.toml"],
    ):
        assert parser.parse_args(args).config == Path("a.toml")
    assert parser.parse_args(["chat"]).config == Path("config.toml")


def test_light_commands_import_no_model_library(tmp_path: Path) -> None:
    """`twin status` and `twin --help` answer without torch, transformers or telethon."""
    config = tmp_path / "config.toml"
    config.write_text('[paths]\ndata_dir = "d"\n')
    probe = (
        "import sys, contextlib, io\n"
        "from twin.app.cli import main\n"
        f"main(['--config', {str(config)!r}, 'status'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'telethon') if m in sys.modules]\n"
        "print('heavy:', heavy)\n"
    )
    # A process of its own: which modules get imported is a property of the whole process.
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert "heavy: []" in result.stdout, result.stdout
