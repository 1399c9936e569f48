"""Private files and folders: everything twin writes holds the owner's chats."""

from __future__ import annotations

import os
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
