"""One writer at a time: every command that writes the data dir holds its lock, a second one is
refused at once naming the holder, a lock whose holder died is taken over, one bot per data dir."""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import twin_command
from twin.app.cli import main
from twin.app.demo import demo_export_path
from twin.core.config import Config
from twin.core.loading import load_config

# A second process that takes a lock of the data dir, says so, and holds it until told to go.
HOLDER = (
    "import sys\n"
    "from pathlib import Path\n"
    "from twin.core.lock import data_dir_lock, serve_lock\n"
    "lock = serve_lock if sys.argv[2] == 'serve' else data_dir_lock\n"
    "with lock(Path(sys.argv[1]), sys.argv[3]):\n"
    "    print('locked', flush=True)\n"
    "    sys.stdin.readline()\n"
    "print('released', flush=True)\n"
)


def _config(tmp_path: Path) -> Config:
    path = tmp_path / "config.toml"
    path.write_text('[paths]\ndata_dir = "data"\n[memory]\nenabled = false\n')
    return load_config(path)


@contextlib.contextmanager
def _holding(data_dir: Path, kind: str, command: str) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), kind, command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        with contextlib.suppress(BrokenPipeError):
            holder.stdin.write("go\n")
            holder.stdin.close()
        holder.wait(timeout=60)


def _twin(config: Config, *args: str) -> int:
    return main(["--config", str(config.source), *args])


def test_a_second_writer_is_refused_at_once_naming_the_holder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    export = str(demo_export_path())
    with _holding(config.data_dir, "data", "twin retrain") as holder:
        # A real second process: refused at once (the holder waits for us, so waiting for the
        # lock would never end; the timeout is only a generous bound).
        refused = subprocess.run(
            twin_command(config, "ingest", "export", export),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert refused.returncode == 1
        assert re.fullmatch(
            rf"twin: error: {re.escape(str(config.data_dir))}/ is in use by `twin retrain` "
            rf"\(pid {holder.pid}\) since \d\d:\d\d: wait for it to finish, or stop it",
            refused.stderr.strip().splitlines()[-1],
        ), refused.stderr
        for argv in (
            ["dataset"],
            ["train"],
            ["retrain"],
            ["eval"],
            ["eval", "--canaries", "2"],
            ["fact", "add", "i", "cook"],
            ["fact", "forget", "1"],
            ["ingest", "telegram"],
        ):
            assert _twin(config, *argv) == 1, argv
            err = capsys.readouterr().err
            assert f"is in use by `twin retrain` (pid {holder.pid})" in err, (argv, err)
            assert "Traceback" not in err
        # The refused commands wrote nothing; reading commands still answer.
        assert {p.name for p in config.data_dir.iterdir()} == {"write.lock"}
        assert _twin(config, "status") == 0
    assert holder.returncode == 0
    assert holder.stdout is not None and holder.stdout.read().strip() == "released"
    assert _twin(config, "ingest", "export", export) == 0  # the lock is free again
    assert "imported" in capsys.readouterr().out


def test_the_lock_of_a_holder_that_died_is_taken_over(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(tmp_path)
    with _holding(config.data_dir, "data", "twin train") as holder:
        holder.kill()  # SIGKILL: no cleanup ran, the lock file still names it
        holder.wait()
        with caplog.at_level(logging.WARNING):
            assert _twin(config, "ingest", "export", str(demo_export_path())) == 0
    assert f"`twin train` (pid {holder.pid}) since " in caplog.text
    assert "died holding the lock; taking it over" in caplog.text
    assert (config.data_dir / "write.lock").read_text() == ""  # released cleanly
    assert (config.data_dir / "write.lock").stat().st_mode & 0o777 == 0o600


def test_one_bot_per_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TWIN_BOT_TOKEN", raising=False)  # were it refused not, it stops there
    config = _config(tmp_path)
    with _holding(config.data_dir, "serve", "twin serve") as holder:
        assert _twin(config, "serve") == 1
        err = capsys.readouterr().err.strip()
        assert re.fullmatch(
            rf"twin: error: {re.escape(str(config.data_dir))}/ is already served by `twin serve` "
            rf"\(pid {holder.pid}\) since \d\d:\d\d: one bot per data dir; stop that one first",
            err,
        ), err
        # The serve lock is not the data dir's: the nightly retrain a bot starts (and any
        # writer) goes ahead while the bot runs.
        assert _twin(config, "ingest", "export", str(demo_export_path())) == 0
