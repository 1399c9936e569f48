"""The adapter registry: versioned LoRA adapters in data_dir/adapters/, one of them current.

    adapters/
      20261124-031500/   adapter files, metrics.json, train_config.json
      20261125-030002/
      CURRENT            the current version's name, replaced atomically

A version is written into a hidden `.tmp-<version>.<owner>` folder (twin.core.files owner
tags) and renamed into place only when complete; CURRENT is switched with os.replace. A run
killed at any moment therefore leaves the current adapter as it was, and at most a hidden
folder that nothing lists (and the next run sweeps away once its process is gone). A version
name is taken under a brief lock, so two runs registering in the same second get two names.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from trainer.metrics import METRICS, AdapterMetrics, Gate, MetricsUnreadable, read_metrics
from twin.core.config import Config, EvalConfig
from twin.core.files import ensure_private_dir, owner_tag, sweep_orphans, write_private_text
from twin.core.lock import brief_lock

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
NAMING_LOCK = ".naming.lock"
_VERSION = re.compile(r"^\d{8}-\d{6}(-\d+)?$")


@dataclass(frozen=True)
class AdapterInfo:
    version: str
    path: Path
    state: str  # "current", "ready" or "rejected"
    metrics: AdapterMetrics

    @property
    def created(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.metrics.created))

    def as_json(self) -> dict[str, Any]:
        """What `twin status --json` shows of an adapter: numbers, never message text (the
        samples and examples stay in the adapter's own files)."""
        m = self.metrics
        return {
            "version": self.version,
            "created": self.created,
            "path": str(self.path),
            "state": self.state,
            "base_model": m.base_model,
            "steps": m.run.steps,
            "base_eval_loss": m.base_eval_loss,
            "eval_loss": m.eval_loss,
            "examples": {"train": m.dataset.train, "eval": m.dataset.eval},
            "gate": m.gate.reason if m.gate else None,
            "fidelity": None
            if m.fidelity is None
            else {
                "style_distance_base": m.fidelity.style_distance_base,
                "style_distance_twin": m.fidelity.style_distance_twin,
                "auc_base": m.fidelity.auc_base,
                "auc_twin": m.fidelity.auc_twin,
                "memorization_rate": m.fidelity.memorization_rate,
            },
        }


def new_version(adapters_dir: Path, now: float | None = None) -> str:
    """A version name sortable by time (UTC), unique within the registry: no version has it,
    and no run is writing one under it."""
    base = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    version, n = base, 1
    while _taken(adapters_dir, version):
        n += 1
        version = f"{base}-{n}"
    return version


def write_adapter(adapters_dir: Path, version: str, write: Callable[[Path], None]) -> Path:
    """Create version `version` by calling `write(folder)`, then rename it into place."""
    _, tmp = _claim(adapters_dir, version)
    return _fill(adapters_dir, version, tmp, write)


def _claim(adapters_dir: Path, version: str | None, now: float | None = None) -> tuple[str, Path]:
    """Take a version name (`version`, or a new one for the time `now`) by creating the hidden
    folder it is written in, under the naming lock."""
    ensure_private_dir(adapters_dir)
    with brief_lock(adapters_dir / NAMING_LOCK):
        if version is None:
            version = new_version(adapters_dir, now)
        elif _taken(adapters_dir, version):
            raise FileExistsError(f"adapter {version} exists or is being written")
        tmp = adapters_dir / f".tmp-{version}.{owner_tag()}"
        tmp.mkdir(mode=0o700)
    return version, tmp


def _taken(adapters_dir: Path, version: str) -> bool:
    return (adapters_dir / version).exists() or any(adapters_dir.glob(f".tmp-{version}.*"))


def _fill(adapters_dir: Path, version: str, tmp: Path, write: Callable[[Path], None]) -> Path:
    try:
        write(tmp)
        if not (tmp / METRICS).exists():
            raise RuntimeError(f"adapter {version} was written without {METRICS}")
        _fsync_tree(tmp)
        final = adapters_dir / version
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a SIGKILL leaves it to the next sweep
        raise
    _fsync_dir(adapters_dir)
    return final


def current_version(adapters_dir: Path) -> str | None:
    """The version CURRENT names, if it is a readable adapter; else None (see
    `current_problem` for why)."""
    return None if current_problem(adapters_dir) else _pointer(adapters_dir)


def current_problem(adapters_dir: Path) -> str | None:
    """Why CURRENT cannot be served (damaged pointer, missing or unreadable adapter), or None
    when it can or when there is no CURRENT at all."""
    if not (adapters_dir / CURRENT).exists():
        return None
    version = _pointer(adapters_dir)
    if version is None:
        return f"{adapters_dir / CURRENT} is damaged (not a version name)"
    try:
        read_metrics(adapters_dir / version)
    except MetricsUnreadable as err:
        return f"the current adapter is unreadable: {err}"
    return None


def newest_promotable(adapters_dir: Path) -> str | None:
    """The newest readable adapter the gate did not reject: what a bot starting with a
    damaged CURRENT serves instead of the bare base (None when there is none)."""
    ready = [a for a in list_adapters(adapters_dir) if a.state != "rejected"]
    return ready[-1].version if ready else None


def _pointer(adapters_dir: Path) -> str | None:
    try:
        version = (adapters_dir / CURRENT).read_bytes().decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return version if _VERSION.match(version) else None


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
    """Complete, readable adapters, oldest first. Hidden temporary folders are never listed;
    an adapter whose metrics.json is damaged is skipped with a warning that names it."""
    if not adapters_dir.is_dir():
        return []
    current = current_version(adapters_dir)
    adapters = []
    for path in sorted(adapters_dir.iterdir()):
        if not (path.is_dir() and _VERSION.match(path.name)):
            continue
        try:
            metrics = read_metrics(path)
        except MetricsUnreadable as err:
            log.warning("adapter skipped: %s", err)
            continue
        if path.name == current:
            state = "current"
        elif metrics.promoted_by_gate is False:
            state = "rejected"
        else:
            state = "ready"
        adapters.append(AdapterInfo(path.name, path, state, metrics))
    return adapters


def promotion_gate(
    metrics: AdapterMetrics,
    current: AdapterMetrics | None,
    tolerance: float,
    rules: EvalConfig | None = None,
) -> Gate:
    """Promote only an adapter that beats the base model on held-out loss and is not worse
    than the adapter in use by more than `tolerance`; with `rules` and fidelity measured,
    also one that sounds more like the owner than the base and copies little."""
    loss, base = metrics.eval_loss, metrics.base_eval_loss
    if not loss < base:
        return Gate(False, f"eval loss {loss:.4f} is not below the base's {base:.4f}")
    if current is not None and loss > current.eval_loss + tolerance:
        return Gate(
            False,
            f"eval loss {loss:.4f} is worse than the current adapter's "
            f"{current.eval_loss:.4f} by more than {tolerance}",
        )
    fidelity = metrics.fidelity
    if rules is not None and fidelity is not None:
        twin, base_style = fidelity.style_distance_twin, fidelity.style_distance_base
        if rules.require_style_win and not twin < base_style:
            return Gate(
                False, f"style distance {twin:.3f} is not below the base's {base_style:.3f}"
            )
        auc_twin, auc_base = fidelity.auc_twin, fidelity.auc_base
        if (
            rules.require_indistinguishability_win
            and auc_twin is not None
            and auc_base is not None
            and not auc_twin < auc_base
        ):
            return Gate(
                False, f"real-vs-twin AUC {auc_twin:.3f} is not below the base's {auc_base:.3f}"
            )
        copied, most = fidelity.memorization_rate, rules.max_memorization_rate
        if copied > most:
            return Gate(False, f"{copied:.0%} of replies copy training text (max {most:.0%})")
    return Gate(True, f"eval loss {loss:.4f} < base {base:.4f}")


@dataclass(frozen=True)
class Registered:
    version: str
    path: Path
    metrics: AdapterMetrics  # with its version and the gate's verdict
    pruned: list[str]


def register_adapter(
    config: Config, metrics: AdapterMetrics, save_weights: Callable[[Path], None]
) -> Registered:
    """Write a trained adapter as a new version (weights, metrics.json, the config it was
    trained with and the fidelity report), run the gate against the current one, switch
    CURRENT if it passes, and prune old versions."""
    from trainer.report import write_report

    adapters_dir = config.adapters_dir
    current = current_version(adapters_dir)
    current_metrics = read_metrics(adapters_dir / current) if current else None
    gate = promotion_gate(metrics, current_metrics, config.train.promote_tolerance, config.eval)
    version, tmp = _claim(adapters_dir, None, metrics.created)
    metrics = replace(metrics, version=version, gate=gate)

    def write(folder: Path) -> None:
        save_weights(folder)
        train_config = {
            "lora": config.lora.model_dump(mode="json"),
            "train": config.train.model_dump(mode="json"),
            "model": config.model.model_dump(mode="json"),
        }
        write_private_text(folder / "train_config.json", json.dumps(train_config, indent=1))
        write_private_text(
            folder / METRICS, json.dumps(metrics.to_json(), indent=1, ensure_ascii=False)
        )
        if metrics.fidelity is not None:
            write_report(folder, metrics)

    path = _fill(adapters_dir, version, tmp, write)
    if gate.promote:
        set_current(adapters_dir, version)
    pruned = prune(adapters_dir, config.train.keep_adapters)
    return Registered(version, path, metrics, pruned)


def sweep_incomplete(adapters_dir: Path) -> int:
    """Remove the folders killed runs left behind (never one a live run is writing); returns
    how many."""
    return sweep_orphans(adapters_dir, ".tmp-*")


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
