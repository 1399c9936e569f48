"""twin's benchmarks: `python -m bench` runs them all; each module also runs on its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twin.core.noise import quiet_libraries

# Every benchmark module imports this package first, before any model library: the same
# silence as the `twin` command (loading bars, bitsandbytes' optional-kernel notice).
quiet_libraries()


def emit(result: dict[str, Any], out: Path | None) -> None:
    """A benchmark's result: printed, and written to `out` (JSON) for `python -m bench`."""
    if out is not None:
        out.write_text(json.dumps(result))
    print(json.dumps(result, indent=1))
