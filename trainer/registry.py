"""The adapter registry: versioned LoRA adapters in data_dir/adapters/, one of them current.

    adapters/
      20261124-031500/   adapter files, metrics.json, train_config.json
      20261125-030002/
      CURRENT            the current version's name, replaced atomically

A version is written into a hidden `.tmp-<version>` folder and renamed into place only when
complete; CURRENT is switched with os.replace. A run killed at any moment therefore leaves the
current adapter as it was, and at most a hidden folder that nothing lists (and the next run
sweeps away).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.config import EvalConfig
from twin.files import ensure_private_dir

CURRENT = "CURRENT"
METRICS = "metrics.json"
_VERSION = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


@dataclass(frozen=True)
class AdapterInfo:
    version: str
    created: str
    path: Path
    state: str  # "current", "ready" or "rejected"
    metrics: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created": self.created,
            "path": str(self.path),
            "state": self.state,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def new_version(adapters_dir: Path, now: float | None = None) -> str:
    """A version name sortable by time (UTC), unique within the registry."""
    base = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    version, n = base, 1
    while (adapters_dir / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


def write_adapter(adapters_dir: Path, version: str, write: Callable[[Path], None]) -> Path:
    """Create version `version` by calling `write(folder)`, then rename it into place."""
    ensure_private_dir(adapters_dir)
    tmp = adapters_dir / f".tmp-{version}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    write(tmp)
    if not (tmp / METRICS).exists():
        raise RuntimeError(f"adapter {version} was written without {METRICS}")
    _fsync_tree(tmp)
    final = adapters_dir / version
    os.replace(tmp, final)
    _fsync_dir(adapters_dir)
    return final


def current_version(adapters_dir: Path) -> str | None:
    try:
        version = (adapters_dir / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None
    return version if version and (adapters_dir / version / METRICS).exists() else None


def set_current(adapters_dir: Path, version: str) -> None:
    """Point CURRENT at `version` atomically (readers see the old or the new, never half)."""
    if not (adapters_dir / version / METRICS).exists():
        raise ValueError(f"no adapter {version} in {adapters_dir}")
    tmp = adapters_dir / f".{CURRENT}.tmp"
    with tmp.open("w") as f:
        f.write(version + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, adapters_dir / CURRENT)
    _fsync_dir(adapters_dir)


def list_adapters(adapters_dir: Path) -> list[AdapterInfo]:
    """Complete adapters, oldest first. Hidden temporary folders are never listed."""
    if not adapters_dir.is_dir():
        return []
    current = current_version(adapters_dir)
    adapters = []
    for path in sorted(adapters_dir.iterdir()):
        if not (path.is_dir() and _VERSION.match(path.name) and (path / METRICS).exists()):
            continue
        metrics = read_metrics(path)
        if path.name == current:
            state = "current"
        elif metrics.get("gate", {}).get("promote") is False:
            state = "rejected"
        else:
            state = "ready"
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(metrics.get("created", 0)))
        adapters.append(AdapterInfo(path.name, created, path, state, metrics))
    return adapters


def read_metrics(path: Path) -> dict[str, Any]:
    return dict(json.loads((path / METRICS).read_text()))


def promotion_gate(
    metrics: dict[str, Any],
    current: dict[str, Any] | None,
    tolerance: float,
    rules: EvalConfig | None = None,
) -> GateDecision:
    """Promote only an adapter that beats the base model on held-out loss and is not worse
    than the adapter in use by more than `tolerance`; with `rules` and fidelity measured,
    also one that sounds more like the owner than the base and copies little."""
    loss, base = metrics["eval_loss"], metrics["base_eval_loss"]
    if not loss < base:
        return GateDecision(False, f"eval loss {loss:.4f} is not below the base's {base:.4f}")
    if current is not None and loss > current["eval_loss"] + tolerance:
        return GateDecision(
            False,
            f"eval loss {loss:.4f} is worse than the current adapter's "
            f"{current['eval_loss']:.4f} by more than {tolerance}",
        )
    fidelity = metrics.get("fidelity")
    if rules is not None and fidelity is not None:
        twin, base_style = fidelity["style_distance_twin"], fidelity["style_distance_base"]
        if rules.require_style_win and not twin < base_style:
            return GateDecision(
                False, f"style distance {twin:.3f} is not below the base's {base_style:.3f}"
            )
        auc_twin, auc_base = fidelity["auc_twin"], fidelity["auc_base"]
        if (
            rules.require_indistinguishability_win
            and None not in (auc_twin, auc_base)
            and not auc_twin < auc_base
        ):
            return GateDecision(
                False, f"real-vs-twin AUC {auc_twin:.3f} is not below the base's {auc_base:.3f}"
            )
        copied, most = fidelity["memorization_rate"], rules.max_memorization_rate
        if copied > most:
            return GateDecision(
                False, f"{copied:.0%} of replies copy training text (max {most:.0%})"
            )
    return GateDecision(True, f"eval loss {loss:.4f} < base {base:.4f}")


def sweep_incomplete(adapters_dir: Path) -> int:
    """Remove folders a killed run left behind; returns how many."""
    if not adapters_dir.is_dir():
        return 0
    stale = [p for p in adapters_dir.iterdir() if p.name.startswith(".tmp-")]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def prune(adapters_dir: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` adapters; the current one is always kept."""
    adapters = list_adapters(adapters_dir)
    removable = [a for a in adapters[: max(len(adapters) - keep, 0)] if a.state != "current"]
    for adapter in removable:
        shutil.rmtree(adapter.path)
    return [a.version for a in removable]


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
