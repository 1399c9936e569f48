"""Benchmark: SFT alone vs SFT + the preference stage, on a demo persona.

Two `twin train` runs on the demo's store and dataset with the demo's settings, the same seed
(so the same SFT): `[preference] enabled = false`, then true. Each registered adapter is then
measured by `twin eval` (trainer.eval.evaluate.evaluate_adapter): real-vs-twin AUC, style
distance, relevance, held-out loss and fact recall. The stage's own record (metrics.json
`preference`) gives its seconds and the share of the run they are; when the gate kept SFT
alone, the second adapter *is* SFT alone, and the record holds what the stage would have made.

    .venv/bin/python -m bench.preference [--lang en|ru] [--steps 60] [--no-eval]

--no-eval (the quick smoke run) reads the runs' own figures instead: no fact recall.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import emit
from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.store import open_store
from trainer.eval.evaluate import evaluate_adapter
from trainer.metrics import AdapterMetrics
from trainer.train import train
from twin.app.demo import PERSONAS, demo_export_path
from twin.core.config import Config
from twin.core.loading import load_config


def setup(folder: Path, lang: str, steps: int) -> Config:
    (folder / "config.toml").write_text(PERSONAS[lang].config)
    config = load_config(folder / "config.toml").with_section("train", max_steps=steps)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with open_store(config.store_path) as store:
        import_export(demo_export_path(lang), store)
        build_dataset(config, store)
    return config


def figures(metrics: AdapterMetrics) -> dict[str, Any]:
    """The headline of `twin eval` for one adapter (or of the run's own eval: no recall)."""
    assert metrics.fidelity is not None
    full = metrics.fidelity.full
    semantic = full.get("semantic_similarity") or {}
    recall = full.get("memory", {}).get("fact_recall") or {}
    return {
        "auc": metrics.fidelity.auc_twin,
        "style_distance": metrics.fidelity.style_distance_twin,
        "relevance": semantic.get("twin"),
        "eval_loss": full.get("loss", {}).get("twin", metrics.eval_loss),
        "recall_guided": recall.get("recall_guided"),
        "recall_plain": recall.get("recall_plain"),
    }


def run(config: Config, enabled: bool, full_eval: bool) -> dict[str, Any]:
    config = config.with_section("preference", enabled=enabled)
    started = time.perf_counter()
    result = train(config, progress=False)
    assert result is not None
    seconds = time.perf_counter() - started
    measured = evaluate_adapter(config, result.version) if full_eval else result.metrics
    stage = result.metrics.preference
    return {
        "version": result.version,
        "run_seconds": seconds,
        "figures": figures(measured),
        "stage": asdict(stage) if stage else None,
    }


def measure(folder: Path, lang: str, steps: int, full_eval: bool) -> dict[str, Any]:
    config = setup(folder, lang, steps)
    sft = run(config, enabled=False, full_eval=full_eval)
    preferred = run(config, enabled=True, full_eval=full_eval)
    stage = preferred["stage"]
    assert stage is not None
    a, b = sft["figures"], preferred["figures"]
    return {
        "lang": lang,
        "steps": steps,
        "sft": sft,
        "preference": preferred,
        "kept": stage["kept"],
        "stage_seconds": stage["seconds"],
        "stage_share": stage["seconds"] / preferred["run_seconds"],
        "auc_drop": a["auc"] - b["auc"],
        "style_change": b["style_distance"] - a["style_distance"],
        "loss_change": b["eval_loss"] / a["eval_loss"] - 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lang", choices=sorted(PERSONAS), default="en")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument(
        "--no-eval", action="store_true", help="the runs' own figures, without `twin eval`"
    )
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        emit(measure(Path(folder), args.lang, args.steps, not args.no_eval), args.out)


if __name__ == "__main__":
    main()
