"""What the bot's tests import: a bot config pointing at the Bot API stand-in, trained tiny
adapters copied in, and `serving()`, which runs the real Application (long polling over real
HTTP) in a test. (The fixtures, the stand-in's among them, are in tests/conftest.py.)"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot.app import build_application, running
from bot.chat_log import Where
from bot.context import BotRuntime
from tests.bot.botapi import TOKEN
from trainer import registry
from twin.app.demo import demo_export_path
from twin.core.config import Config
from twin.core.loading import load_config

ADMIN = 42
FRIENDS = tuple(range(1, 21))
STRANGER = 77
GROUP = -100123


def bot_config(folder: Path, base: Path, api_url: str, **sections: dict[str, Any]) -> Config:
    """A config for a bot on `base` talking to the stand-in; sections override the defaults."""
    settings: dict[str, dict[str, Any]] = {
        "paths": {"data_dir": "data"},
        "model": {"base": str(base)},
        "generation": {"max_new_tokens": 8},
        "train": {
            "max_steps": 6,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "checkpoint_steps": 0,
            "max_seq_tokens": 128,
            "sample_replies": 1,
        },
        "telegram": {
            "api_base_url": api_url,
            "allowed_users": list(FRIENDS),
            "admins": [ADMIN],
            "allowed_chats": [GROUP],
        },
        "bot": {"line_pause_per_char": 0.0, "reload_seconds": 0.2},
        "schedule": {"retrain_cron": ""},  # the schedule's own tests turn it on
        # The fidelity eval is the subject of its own tests (tests/trainer/eval/);
        # here it would only cost time. A tiny random model has no style to win with anyway.
        "eval": {"on_train": False, "require_style_win": False, "memorization_prompts": 8},
        # What "auto" picks (llama.cpp for an embedded base on a CPU) has tests of its own
        # (tests/serving); the bot's tests and benches read the transformers engine's model.
        "serving": {"engine": "transformers"},
    }
    for name, values in sections.items():
        settings.setdefault(name, {}).update(values)
    lines = []
    for name, values in settings.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def retrain_config(
    folder: Path,
    base: Path,
    api_url: str = "http://127.0.0.1:9",
    *,
    exports: list[str] | None = None,
    **sections: dict[str, Any],
) -> Config:
    """A bot config whose `twin retrain` re-reads the bundled demo export (or `exports`).
    Memory is off unless a test turns it on: indexing the demo persona is its own subject."""
    sections.setdefault("memory", {"enabled": False})
    return bot_config(
        folder,
        base,
        api_url,
        ingest={"exports": exports if exports is not None else [str(demo_export_path())]},
        dataset={"max_tokens": 128},
        **sections,
    )


def copy_adapters(trained: Path, config: Config) -> list[str]:
    shutil.copytree(trained, config.adapters_dir)
    return [a.version for a in registry.list_adapters(config.adapters_dir)]


@contextlib.asynccontextmanager
async def serving(config: Config) -> AsyncIterator[BotRuntime]:
    app = build_application(config, TOKEN, poll_timeout=1)
    async with running(app, poll_timeout=1) as runtime:
        yield runtime


def said(runtime: BotRuntime, chat_id: int, thread_id: int = 0) -> list[tuple[str, str]]:
    """A conversation's messages in the chat log as (speaker, text), oldest first."""
    return [(s.speaker, s.text) for s in runtime.chat_log.recent(Where(chat_id, thread_id))]


def turns(
    runtime: BotRuntime, chat_id: int, *, group: bool = False, thread_id: int = 0
) -> list[dict[str, str]]:
    """The turns a reply in that conversation would now be written after (no system turn)."""
    prompt = runtime.worker.prompt_for(Where(chat_id, thread_id), group).conversation
    return [dict(m) for m in prompt if m["role"] != "system"]
