"""`twin serve` as a user starts and stops it: the token, the Bot API URL and the command
menus, webhooks and their secret, the prompt check at start, and SIGTERM mid-reply."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bot.app import build_application
from tests.bot.botapi import TOKEN, BotApiStandIn
from tests.bot.helpers import ADMIN, bot_config, serving
from twin.app.cli import main
from twin.core.config import Config


def test_serve_needs_the_token(
    tmp_path: Path,
    tiny_base: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = bot_config(tmp_path, tiny_base, "http://127.0.0.1:9")
    monkeypatch.delenv("TWIN_BOT_TOKEN", raising=False)
    assert main(["--config", str(config.source), "serve"]) == 1
    assert "TWIN_BOT_TOKEN is not set" in capsys.readouterr().err


@pytest.mark.anyio
async def test_bot_api_url_and_token_reach_the_stand_in(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url + "/")
    app = build_application(config, TOKEN)
    assert app.bot.base_url == f"{api.url}/bot{TOKEN}"
    async with serving(config):
        pass
    menus = api.sent("setMyCommands")
    assert any(
        "persona" in c.params["commands"] and str(ADMIN) in c.params.get("scope", "") for c in menus
    )
    assert any("persona" not in c.params["commands"] for c in menus)


def webhook_config(tmp_path: Path, tiny_base: Path, api: BotApiStandIn) -> tuple[Config, int]:
    """A bot config in webhook mode, listening on a free local port (returned with it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        telegram={"webhook_url": "https://twin.example.org/telegram", "webhook_port": port},
    )
    return config, port


def private_update(update_id: int, user: int, name: str, text: str) -> dict[str, Any]:
    """A Bot API update: `user` writes `text` to the bot in a private chat."""
    message: dict[str, Any] = {
        "message_id": 1,
        "date": 0,
        "chat": {"id": user, "type": "private"},
        "from": {"id": user, "is_bot": False, "first_name": name},
        "text": text,
    }
    if text.startswith("/"):
        command = text.split()[0]
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
    return {"update_id": update_id, "message": message}


@pytest.mark.anyio
async def test_webhook_mode(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    config, port = webhook_config(tmp_path, tiny_base, api)
    monkeypatch.setenv("TWIN_WEBHOOK_SECRET", "s3cret-token")
    update = private_update(1, 1, "Ann", "hello via webhook")
    async with serving(config), httpx.AsyncClient() as client:
        (registered,) = api.sent("setWebhook")
        assert registered.params["url"] == "https://twin.example.org/telegram"
        assert registered.params["secret_token"] == "s3cret-token"
        url = f"http://127.0.0.1:{port}/telegram"
        forged = await client.post(url, json=update)
        assert forged.status_code == 403  # no secret header: not from Telegram
        headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
        accepted = await client.post(url, json=update, headers=headers)
        assert accepted.status_code == 200
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1)
        assert len(api.sent("sendMessage")) == len(api.sent(chat_id=1))


@pytest.mark.anyio
async def test_webhook_without_a_configured_secret_still_refuses_forged_updates(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    config, port = webhook_config(tmp_path, tiny_base, api)
    monkeypatch.delenv("TWIN_WEBHOOK_SECRET", raising=False)
    forged = private_update(7, ADMIN, "Owner", "/persona pause")
    async with serving(config) as runtime, httpx.AsyncClient() as client:
        (registered,) = api.sent("setWebhook")
        secret = registered.params["secret_token"]
        assert len(secret) >= 32  # generated and registered with Telegram
        url = f"http://127.0.0.1:{port}/telegram"
        assert (await client.post(url, json=forged)).status_code == 403
        wrong = {"X-Telegram-Bot-Api-Secret-Token": "guess"}
        assert (await client.post(url, json=forged, headers=wrong)).status_code == 403
        await api.settle()
        assert not runtime.chat_log.paused


def test_a_webhook_secret_telegram_would_refuse_is_one_line_without_it(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _port = webhook_config(tmp_path, tiny_base, api)
    monkeypatch.setenv("TWIN_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("TWIN_WEBHOOK_SECRET", "my secret!")
    assert main(["--config", str(config.source), "serve"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "twin: error: TWIN_WEBHOOK_SECRET must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
        "(Telegram's rule for a webhook secret)"
    )
    assert not api.calls  # refused before the bot said a word to Telegram


def test_a_prompt_the_served_tokenizer_cannot_fit_stops_serve_in_one_line(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """config.toml's check estimates 3 characters a token; CJK characters take more than one
    token each here, so only the served tokenizer can tell that this prompt leaves no room."""
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        persona={"system_prompt": "漢" * 300},
        bot={"context_tokens": 512},
    )
    monkeypatch.setenv("TWIN_BOT_TOKEN", TOKEN)
    assert main(["--config", str(config.source), "serve"]) == 1
    # (In this process transformers was imported before the CLI could quiet its loading bar.)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("twin: error: the persona system prompt and one message take ")
    assert err.endswith(
        "but [bot] context_tokens 512 minus [generation] max_new_tokens 8 leaves 504: raise "
        "context_tokens, lower max_new_tokens or shorten the prompt"
    )
    assert not api.sent("sendMessage")


def test_a_rejected_token_is_one_line_without_the_token(
    tmp_path: Path,
    tiny_base: Path,
    api: BotApiStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    monkeypatch.setenv("TWIN_BOT_TOKEN", "424242:WRONG-very-secret")
    assert main(["--config", str(config.source), "serve"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "twin: error: Telegram rejected TWIN_BOT_TOKEN: check it (from @BotFather, "
        "/mybots -> API Token)"
    )
    assert "very-secret" not in err and "Traceback" not in err


# `twin serve` (`python -m twin serve`) with the model worker's debug line on: "generating a
# batch of N" as a batch goes to the engine, so a test sees the model at work on a reply.
SERVE_SHOWING_BATCHES = (
    "import logging, sys; from twin.app.cli import main; "
    "logging.getLogger('bot.worker').setLevel(logging.DEBUG); sys.exit(main(sys.argv[1:]))"
)


class Stderr:
    """A child's stderr, read as it comes (a pipe nobody reads can fill and block the child)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    def seen(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def text(self) -> str:
        if self.process.poll() is not None:
            self._reader.join(timeout=10)  # the child has exited: the rest is in the pipe
        return "".join(self.lines)


def test_sigterm_stops_serve_within_seconds_even_mid_reply(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn
) -> None:
    # A long greedy reply from the tiny model (it never picks its end-of-turn token).
    config = bot_config(
        tmp_path,
        tiny_base,
        api.url,
        generation={"max_new_tokens": 4000, "temperature": 0.0},
        bot={"context_tokens": 8192},
    )
    env = {**os.environ, "TWIN_BOT_TOKEN": TOKEN}
    assert config.source is not None
    command = [sys.executable, "-c", SERVE_SHOWING_BATCHES, "--config", str(config.source), "serve"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    stderr = Stderr(process)
    try:
        api.push_message(1, "tell me everything")
        deadline = time.monotonic() + 120
        # The model is at work on the reply: its batch went to `generate`, which then writes
        # token after token (4000 of them) until the stop.
        while not stderr.seen("generating a batch of 1"):
            assert process.poll() is None and time.monotonic() < deadline, stderr.text()
            time.sleep(0.05)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        stopped_in = time.monotonic() - signalled
    finally:
        process.kill()
    assert process.returncode == 0, stderr.text()
    assert stopped_in < 5, f"took {stopped_in:.1f} s to stop"
    assert api.sent(chat_id=1) == []  # the interrupted reply was not sent half-written
