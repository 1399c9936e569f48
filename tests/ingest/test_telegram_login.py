"""Logging in and pulling with a real TelegramClient's API, offline: credentials, the
private session file, takeout sessions, and the unattended pull of the nightly retrain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from telethon.errors import TakeoutInitDelayError
from telethon.tl import types as tl

from ingest.store import open_store
from ingest.telegram import (
    can_pull_unattended,
    run_pull,
    telegram_session,
)
from tests.ingest.telethon_doubles import (
    ALICE,
    ME,
    FakeClient,
    private_history,
    stored_ids,
)
from twin.core.config import Config, IngestConfig, PathsConfig, VoiceConfig
from twin.core.errors import TwinError

# --- run_pull: only what happens before any network ---------------------------------------


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({}, "TWIN_API_ID is not set"),
        ({"TWIN_API_ID": "abc", "TWIN_API_HASH": "h"}, "TWIN_API_ID must be a number"),
        ({"TWIN_API_ID": "123"}, "TWIN_API_HASH is not set"),
    ],
)
def test_run_pull_needs_the_api_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str
) -> None:
    monkeypatch.delenv("TWIN_API_ID", raising=False)
    monkeypatch.delenv("TWIN_API_HASH", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = Config(paths=PathsConfig(data_dir=tmp_path / "data"))
    with pytest.raises(TwinError, match=error):
        run_pull(config)
    assert not (tmp_path / "data" / "telegram.session").exists()


class FakeTelegramClient:
    """Stands in for `telethon.TelegramClient` inside run_pull: records how it was driven."""

    def __init__(self, session: str, api_id: int, api_hash: str):
        self.session, self.api_id, self.api_hash = Path(session), api_id, api_hash
        self.inner = FakeClient(ME, [(ALICE, private_history(ALICE, range(1, 4)))])
        self.takeout_kwargs: dict[str, Any] | None = None
        self.takeout_error: BaseException | None = None
        self.wait_time: float | None = None
        self.disconnected = False
        FAKE_CLIENTS.append(self)

    async def start(self, phone: Any, password: Any) -> None:
        assert callable(phone) and callable(password)  # asked interactively, never stored
        self.session.write_bytes(b"auth key")  # as Telethon does on login

    async def connect(self) -> None:
        pass

    async def is_user_authorized(self) -> bool:
        return self.session.read_bytes() == b"auth key"

    async def get_me(self) -> tl.User:
        return await self.inner.get_me()

    def iter_dialogs(self) -> AsyncIterator[SimpleNamespace]:
        return self.inner.iter_dialogs()

    def iter_messages(
        self, entity: Any, min_id: int = 0, reverse: bool = False, wait_time: float | None = None
    ) -> AsyncIterator[Any]:
        self.wait_time = wait_time
        return self.inner.iter_messages(entity, min_id=min_id, reverse=reverse)

    def takeout(self, **kwargs: Any) -> FakeTelegramClient:
        self.takeout_kwargs = kwargs
        return self

    async def __aenter__(self) -> FakeTelegramClient:
        if self.takeout_error is not None:
            raise self.takeout_error
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def disconnect(self) -> None:
        self.disconnected = True


FAKE_CLIENTS: list[FakeTelegramClient] = []


@pytest.fixture
def fake_telegram(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeTelegramClient]]:
    monkeypatch.setenv("TWIN_API_ID", "123")
    monkeypatch.setenv("TWIN_API_HASH", "abc")
    monkeypatch.setattr("ingest.telegram.TelegramClient", FakeTelegramClient)
    FAKE_CLIENTS.clear()
    yield FAKE_CLIENTS
    FAKE_CLIENTS.clear()


def test_run_pull_logs_in_privately_and_pulls_into_the_configured_store(
    tmp_path: Path, fake_telegram: list[FakeTelegramClient], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    config = Config(paths=PathsConfig(data_dir=data))

    summary = run_pull(config)

    (client,) = fake_telegram
    assert (client.session, client.api_id, client.api_hash) == (
        data / "telegram.session",
        123,
        "abc",
    )
    assert (data.stat().st_mode & 0o777, client.session.stat().st_mode & 0o777) == (0o700, 0o600)
    assert (client.takeout_kwargs, client.wait_time, client.disconnected) == (None, None, True)
    assert summary.added == 3
    with open_store(config.store_path) as store:
        assert stored_ids(store, 42) == [1, 2, 3]
    assert "Alice Smith (42): 3 new messages" in capsys.readouterr().out


def test_run_pull_in_a_takeout_session(
    tmp_path: Path, fake_telegram: list[FakeTelegramClient]
) -> None:
    config = Config(paths=PathsConfig(data_dir=tmp_path / "data"))
    summary = run_pull(config, takeout=True)
    (client,) = fake_telegram
    # Files: the voice messages, downloaded within [voice] pull_budget_mb.
    assert client.takeout_kwargs == {
        "finalize": True,
        "users": True,
        "chats": True,
        "megagroups": True,
        "channels": False,
        "files": True,
        "max_file_size": 200 * 1024 * 1024,
    }
    assert (client.wait_time, summary.added) == (0, 3)
    silent = config.model_copy(update={"voice": VoiceConfig(enabled=False)})
    run_pull(silent, takeout=True)
    assert (fake_telegram[-1].takeout_kwargs or {})["files"] is False


def test_run_pull_asks_to_confirm_a_delayed_takeout(
    tmp_path: Path, fake_telegram: list[FakeTelegramClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    def delayed(*args: Any) -> FakeTelegramClient:
        client = FakeTelegramClient(*args)
        client.takeout_error = TakeoutInitDelayError(request=None, capture=86400)
        return client

    monkeypatch.setattr("ingest.telegram.TelegramClient", delayed)
    config = Config(
        paths=PathsConfig(data_dir=tmp_path / "data"), ingest=IngestConfig(takeout=True)
    )
    with pytest.raises(TwinError, match="confirm the data export"):
        run_pull(config)
    assert fake_telegram[0].disconnected


def test_unattended_pull_never_prompts(
    tmp_path: Path, fake_telegram: list[FakeTelegramClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config(paths=PathsConfig(data_dir=tmp_path / "data"))
    monkeypatch.setattr("builtins.input", lambda *_: pytest.fail("prompted"))
    with pytest.raises(TwinError, match="not logged in to Telegram"):
        run_pull(config, interactive=False)
    (config.data_dir / "telegram.session").write_bytes(b"auth key")  # logged in once
    assert run_pull(config, interactive=False).added == 3


def test_unattended_pull_needs_credentials_and_a_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = Config(paths=PathsConfig(data_dir=tmp_path / "data"))
    monkeypatch.setenv("TWIN_API_ID", "123")
    monkeypatch.setenv("TWIN_API_HASH", "abc")
    assert not can_pull_unattended(config)  # never logged in
    session = telegram_session(config)
    session.parent.mkdir(parents=True)
    session.write_bytes(b"")  # created, but the login never finished
    assert not can_pull_unattended(config)
    session.write_bytes(b"auth key")
    assert can_pull_unattended(config)
    monkeypatch.delenv("TWIN_API_HASH")
    assert not can_pull_unattended(config)
