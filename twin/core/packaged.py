"""Model files that come inside PyPI packages: found without importing the package, and joined
into the model cache where PyPI's size limit split them, checked by SHA-256.

The packages are never imported (some import heavy things of their own, or nothing useful):
their folders are found with importlib's find_spec. A file split into parts is joined once into
the cache and used only when its SHA-256 is the one expected, so a damaged part or a stale
cache is refused or rebuilt, never loaded. Used by the embedded language models
(trainer.embedded) and the Whisper model (ingest.voice).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir, file_sha256


def package_folder(package: str, *, what: str, install: str) -> Path:
    """The folder of the installed package `package` (an import name), not imported."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TwinError(f"{what} is not installed: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def joined_file(parts: Sequence[Path], target: Path, sha256: str, *, install: str) -> Path:
    """`target`, the parts joined in order, with the SHA-256 `sha256`: made once, then reused
    while it still has that hash. Raises TwinError, leaving nothing behind, when a part is
    missing or the joined bytes are not the expected ones."""
    for part in parts:
        if not part.exists():
            raise TwinError(f"{part} is missing: reinstall the model ({install})")
    if target.exists() and file_sha256(target) == sha256:
        return target
    ensure_private_dir(target.parent)
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    with tmp.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)
    actual = file_sha256(tmp)
    if actual != sha256:
        tmp.unlink()
        raise TwinError(
            f"the joined {target.name} has SHA-256 {actual[:16]}..., not the {sha256[:16]}... "
            f"expected: refusing it; reinstall the model ({install})"
        )
    os.replace(tmp, target)
    return target
