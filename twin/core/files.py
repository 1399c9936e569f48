"""Private files and folders: everything twin writes holds the owner's chats.

A temporary folder (a half-written adapter, a run's checkpoints, the canary's scratch) carries
its process's owner tag in its name, `<name>.<pid>-<start>`: the folders a dead process left
are swept, and the ones of a run still going on are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) readable by the owner only (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def make_private_file(path: Path) -> None:
    """Create `path` if missing and restrict it to the owner (0600)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def write_private_text(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically (a reader sees the old or the new file, never
    half), created 0600 and fsynced before the rename."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MB pieces (exports and models are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def owner_tag(pid: int | None = None) -> str:
    """`<pid>-<start>`: names process `pid` (default this one) for as long as it lives. The
    start time (clock ticks after boot, 0 where /proc is missing) tells a reused pid apart."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_started(pid)}"


def owner_alive(tag: str) -> bool:
    """Whether the process an owner tag names still runs; False for what is not a tag (a
    folder left by a version without tags)."""
    pid, _, start = tag.partition("-")
    if not (pid.isdigit() and start.isdigit()):
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    now = _started(int(pid))
    return not (int(start) and now and now != int(start))


def owner_of(name: str) -> str:
    """The owner tag at the end of a folder name (`.tmp-20261124-031500.4242-9001`)."""
    return name.rpartition(".")[2]


def sweep_orphans(parent: Path, pattern: str) -> int:
    """Remove the folders under `parent` matching `pattern` whose owner process is gone;
    returns how many."""
    if not parent.is_dir():
        return 0
    orphans = [p for p in parent.glob(pattern) if p.is_dir() and not owner_alive(owner_of(p.name))]
    for path in orphans:
        shutil.rmtree(path, ignore_errors=True)
    return len(orphans)


@contextlib.contextmanager
def private_scratch(parent: Path, prefix: str) -> Iterator[Path]:
    """A private (0700) temporary folder under `parent`, owned by this process and removed
    after; the ones with `prefix` that dead processes left are swept first."""
    ensure_private_dir(parent)
    sweep_orphans(parent, f"{prefix}-*")
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", suffix=f".{owner_tag()}", dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _started(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # Field 22 (starttime); the name in parentheses (field 2) may hold spaces.
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else 0
