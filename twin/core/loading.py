"""The config a command runs with: config.toml, validated, with the admins' overrides over it.

The one place a config is read from disk. The schema (`twin.core.config`) reads nothing, and
the overrides (`twin.core.overrides`) apply to a config already built, so neither needs the
other's loading.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from twin.core.config import Config, config_from_dict
from twin.core.errors import TwinError
from twin.core.overrides import with_overrides


def load_config(path: Path | None) -> Config:
    """Read and validate `path` (None: every default), then apply the admins' overrides."""
    if path is None:
        return with_overrides(config_from_dict({}, None))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TwinError(f"{path}: config file not found (pass --config PATH)") from None
    except UnicodeDecodeError:
        raise TwinError(f"{path}: not UTF-8 text, not a config file") from None
    except tomllib.TOMLDecodeError as err:
        raise TwinError(f"{path}: not valid TOML: {err}") from None
    return with_overrides(config_from_dict(raw, path))
