"""One writer at a time: the locks of a data dir.

    data_dir/write.lock   held by every command that writes the data dir (ingest, dataset,
                          train, retrain, eval, fact add/forget, demo): a second one is refused
                          at once, told which command holds it
    data_dir/serve.lock   held by `twin serve` for as long as it runs: one bot per data dir

They are two locks because a bot runs for weeks and starts the nightly `twin retrain` as a
child process, which takes the write lock like any writer.

Both are flocks: the kernel drops one when its process dies, however it dies, so a lock left
by a killed command is simply taken over (and the takeover logged). The holder writes its
command and pid into the file, for the message the next one gets. A process that holds a lock
may take it again (`twin retrain` holds it while the stages it runs in-process ask for it).
Under torchrun every rank runs the command: the main one (RANK 0) holds the lock for all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir

log = logging.getLogger(__name__)

WRITE_LOCK = "write.lock"
SERVE_LOCK = "serve.lock"

_held: dict[Path, int] = {}  # the locks this process holds, and how deep


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, command: str) -> Iterator[None]:
    """Hold the data dir's write lock while `command` (e.g. "twin train") runs, or raise
    TwinError naming the command that holds it."""
    if os.environ.get("RANK", "0") != "0":
        yield  # a torchrun rank other than the main one: that one holds it
        return
    with _hold(data_dir / WRITE_LOCK, command) as busy:
        if busy is not None:
            raise TwinError(
                f"{data_dir}/ is in use by {busy}: wait for it to finish, or stop it"
            ) from None
        yield


@contextlib.contextmanager
def serve_lock(data_dir: Path, command: str = "twin serve") -> Iterator[None]:
    """Hold the data dir's serve lock for as long as the bot runs, or raise TwinError naming
    the bot that holds it."""
    with _hold(data_dir / SERVE_LOCK, command) as busy:
        if busy is not None:
            raise TwinError(
                f"{data_dir}/ is already served by {busy}: one bot per data dir; "
                "stop that one first"
            ) from None
        yield


@contextlib.contextmanager
def brief_lock(path: Path) -> Iterator[None]:
    """An exclusive lock around a few file operations (choosing a name and creating it), for
    which another process may wait: it is held for milliseconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases it


@contextlib.contextmanager
def _hold(path: Path, command: str) -> Iterator[str | None]:
    """Yield None holding the lock at `path`, or who holds it ("`twin retrain` (pid 4242)
    since 03:00") without taking it."""
    path = path.absolute()
    if path in _held:
        _held[path] += 1
        try:
            yield None
        finally:
            _held[path] -= 1
        return
    ensure_private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield _describe(_holder(path))
            return
        if left := handle.read().strip():
            log.warning(
                "%s/: %s died holding the lock; taking it over",
                path.parent,
                _describe(_parse(left) or {"command": left}),
            )
        _write(handle, {"command": command, "pid": os.getpid(), "since": time.time()})
        _held[path] = 1
        try:
            yield None
        finally:
            del _held[path]
            _write(handle, None)  # an empty file: released cleanly
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(handle: IO[str], holder: dict[str, object] | None) -> None:
    handle.seek(0)
    handle.truncate()
    if holder is not None:
        handle.write(json.dumps(holder))
    handle.flush()


def _holder(path: Path) -> dict[str, object]:
    """What the holder wrote; it may have locked the file a moment ago and not written yet."""
    for _ in range(20):
        with contextlib.suppress(OSError):
            if holder := _parse(path.read_text(encoding="utf-8")):
                return holder
        time.sleep(0.05)
    return {}


def _parse(text: str) -> dict[str, object] | None:
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    return holder if isinstance(holder, dict) else None


def _describe(holder: dict[str, object]) -> str:
    command = holder.get("command") or "another twin command"
    pid = holder.get("pid") or "unknown"
    text = f"`{command}` (pid {pid})"
    since = holder.get("since")
    if isinstance(since, int | float):
        today = time.strftime("%Y-%m-%d") == time.strftime("%Y-%m-%d", time.localtime(since))
        text += " since " + time.strftime(
            "%H:%M" if today else "%Y-%m-%d %H:%M", time.localtime(since)
        )
    return text
