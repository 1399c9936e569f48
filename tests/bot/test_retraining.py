"""The bot's retrain child and the model around it: what the child inherits, and a model that
will not load again after a retrain that paused serving. The child here is a short Python
command in place of `twin retrain` (its own tests are tests/app/test_retrain.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bot import retraining
from bot import worker as worker_module
from serving.twin import load_engine
from tests.bot.botapi import BotApiStandIn
from tests.bot.helpers import ADMIN, bot_config, serving
from tests.bot.test_persona import ask, ask_later
from twin.core.config import Config


def child_runs(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """The bot's retrain runs `python -c code` instead of `twin retrain`."""
    monkeypatch.setattr(retraining, "retrain_command", lambda runtime: [sys.executable, "-c", code])


@pytest.mark.anyio
async def test_the_retrain_child_gets_no_bot_secrets(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = bot_config(tmp_path, tiny_base, api.url)
    seen = tmp_path / "child-environment.json"
    child_runs(
        monkeypatch, f"import json, os; json.dump(dict(os.environ), open({str(seen)!r}, 'w'))"
    )
    for name, value in {
        "TWIN_BOT_TOKEN": "123456:secret-token",
        "TWIN_WEBHOOK_SECRET": "webhook-secret",
        "TWIN_ENGINE_API_KEY": "engine-key",
        "TWIN_API_ID": "12345",
        "TWIN_API_HASH": "0123456789abcdef",
        "TWIN_MODEL_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
    }.items():
        monkeypatch.setenv(name, value)
    async with serving(config):
        await ask(api, "/persona train")
        await ask_later(api, "Retrain failed", timeout=60)  # it wrote no run record
    environment = json.loads(seen.read_text())
    # The bot's token, its webhook secret and the serving engine's key stay with the bot...
    assert not {"TWIN_BOT_TOKEN", "TWIN_WEBHOOK_SECRET", "TWIN_ENGINE_API_KEY"} & set(environment)
    assert not any(v in json.dumps(environment) for v in ("secret-token", "webhook-", "engine-key"))
    # ...what the retrain needs goes along: the Telethon login for the pull, the model cache,
    # and everything that is not twin's (the Hugging Face cache, PATH, CUDA settings).
    assert environment["TWIN_API_ID"] == "12345"
    assert environment["TWIN_API_HASH"] == "0123456789abcdef"
    assert environment["TWIN_MODEL_CACHE"] == str(tmp_path / "cache")
    assert environment["HF_HOME"] == str(tmp_path / "hf")
    assert "PATH" in environment


def paused_config(tmp_path: Path, tiny_base: Path, api: BotApiStandIn) -> Config:
    return bot_config(tmp_path, tiny_base, api.url, schedule={"pause_serving_while_training": True})


@pytest.mark.anyio
async def test_a_model_that_will_not_load_after_a_paused_retrain_is_told_and_retried(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = paused_config(tmp_path, tiny_base, api)
    child_runs(monkeypatch, "import sys; sys.exit('training ran out of steps')")
    monkeypatch.setattr(worker_module, "RELOAD_RETRY_S", 0.2)
    loads: list[str] = []

    def flaky_load(config: Config):  # type: ignore[no-untyped-def]
        loads.append("load")
        if 2 <= len(loads) <= 3:  # the two tries after the retrain: the GPU is still busy
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\n(details...)")
        return load_engine(config)

    monkeypatch.setattr(worker_module, "load_engine", flaky_load)
    async with serving(config) as runtime:
        await ask(api, "/persona train")
        problem = await ask_later(api, "Replies are waiting: loading the model", timeout=60)
        assert problem == (
            "Replies are waiting: loading the model again after the retrain failed "
            "(RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB). Trying again "
            "in 0 s, then less often."
        )
        api.push_message(1, "anyone home?")  # waits for the model, then is answered
        await api.wait_for(lambda a: len(a.sent(chat_id=1)) >= 1, 60)
        back = await ask_later(api, "The model is loaded again", timeout=60)
        assert back == "The model is loaded again (after 2 failed tries): answering."
        report = await ask_later(api, "Retrain failed", timeout=60)
        assert "training ran out of steps" in report
        assert len(loads) == 4
        # told once, however many tries failed
        texts = api.texts(ADMIN)
        assert sum(t.startswith("Replies are waiting") for t in texts) == 1
        assert runtime.worker.version is None  # the base, as before (no adapter here)


@pytest.mark.anyio
async def test_a_bot_stopping_during_a_paused_retrain_does_not_load_the_model_again(
    tmp_path: Path, tiny_base: Path, api: BotApiStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = paused_config(tmp_path, tiny_base, api)
    child_runs(monkeypatch, "import time; time.sleep(120)")
    loads: list[str] = []

    def counted_load(config: Config):  # type: ignore[no-untyped-def]
        loads.append("load")
        return load_engine(config)

    monkeypatch.setattr(worker_module, "load_engine", counted_load)
    async with serving(config) as runtime:
        await ask(api, "/persona train")
        await api.wait_for(lambda a: not runtime.worker._loaded.is_set(), 30)
    assert loads == ["load"]  # at start only: nothing is loaded to be dropped at once
