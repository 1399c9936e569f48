"""Study: how much history a twin needs, and how often the gate's style rule disagrees with
held-out loss. Not part of `make bench` (it trains many adapters: ~20 minutes on 2 cores);
its findings are in the README ("How much history a twin needs", "Does it sound like you?").

- history: the demo persona's training examples cut to the first N (the held-out set the
  same for all), a short run each (the demo's config), held-out loss and style distance;
- gate: one adapter per setting (the demo's 1e-3 x 60 steps, the [train] defaults 2e-4 x
  200), its fidelity measured with several sampling seeds: how often "style distance below
  the base's" fails although the held-out loss improved, by the number of held-out prompts.

    .venv/bin/python -m bench.history [--sizes 10 20 40 0] [--seeds 6] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import emit
from bench.training import demo_setup
from trainer.data import encode_examples, read_dataset
from trainer.eval.evaluate import headline, measure_fidelity
from trainer.fit import FitPlan, add_lora, fit
from trainer.loss import heldout_loss
from trainer.model import load_base
from twin.core.config import Config


def trained(config: Config, examples: int | None) -> dict[str, Any]:
    """Train on the first `examples` training examples (None: all); measure held-out loss."""
    dataset = read_dataset(config.dataset_dir)
    rows = dataset.train[:examples] if examples else dataset.train
    base = load_base(config)
    max_seq = config.train.max_seq_tokens
    eval_set = encode_examples(base.tokenizer, dataset.eval, max_seq)
    batch = config.train.batch_size
    base_loss = heldout_loss(base.model, base.tokenizer, eval_set, batch, base.plan)
    model = add_lora(base.model, config, base.plan, base.tokenizer)
    train_set = encode_examples(base.tokenizer, rows, max_seq)
    plan = FitPlan(config.train.max_steps, dataset.info, False, config.data_dir / "checkpoints")
    fit(model, base.tokenizer, train_set, config, base.plan, plan, progress=False)
    model.eval()
    twin_loss = heldout_loss(model, base.tokenizer, eval_set, batch, base.plan)
    return {
        "examples": len(rows),
        "base_loss": base_loss,
        "twin_loss": twin_loss,
        "model": model,
        "tokenizer": base.tokenizer,
        "dataset": dataset,
    }


def style(run: dict[str, Any], config: Config, seeds: int, prompts: int) -> list[dict[str, Any]]:
    """Fidelity headline for `seeds` sampling seeds on the first `prompts` held-out messages."""
    dataset = run["dataset"]
    out = []
    for seed in range(seeds):
        seeded = config.with_section("train", seed=seed).with_section(
            "eval", max_prompts=prompts, memorization_prompts=1
        )
        result = measure_fidelity(
            run["model"], run["tokenizer"], dataset.train, dataset.eval, seeded
        )
        h = headline(result)
        out.append(
            {
                "seed": seed,
                "prompts": result["prompts"],
                "style_base": h.style_distance_base,
                "style_twin": h.style_distance_twin,
                "style_win": h.style_distance_twin < h.style_distance_base,
            }
        )
    return out


def study(sizes: list[int], seeds: int) -> dict[str, Any]:
    report: dict[str, Any] = {"history": [], "gate": []}
    with tempfile.TemporaryDirectory() as folder:
        config = demo_setup(Path(folder)).with_section("eval", on_train=False)
        # More held-out examples than the demo keeps, so style can be judged on 5 and on 20.
        config = config.with_section("dataset", eval_fraction=0.25, eval_min_examples=20)
        from ingest.dataset import build_dataset
        from ingest.store import open_store

        with open_store(config.store_path) as store:
            build_dataset(config, store, progress=False)
        for size in sizes:
            run = trained(config, size or None)
            [measured] = style(run, config, 1, 20)
            report["history"].append(
                {k: run[k] for k in ("examples", "base_loss", "twin_loss")}
                | {"style_base": measured["style_base"], "style_twin": measured["style_twin"]}
            )
            print(json.dumps(report["history"][-1]), flush=True)
        for lr, steps in ((1e-3, 60), (2e-4, 200)):
            tuned = config.with_section("train", learning_rate=lr, max_steps=steps)
            run = trained(tuned, None)
            for prompts in (5, 20):
                verdicts = style(run, tuned, seeds, prompts)
                report["gate"].append(
                    {
                        "learning_rate": lr,
                        "steps": steps,
                        "prompts": prompts,
                        "loss_improved": run["twin_loss"] < run["base_loss"],
                        "base_loss": run["base_loss"],
                        "twin_loss": run["twin_loss"],
                        "style_rejections": sum(not v["style_win"] for v in verdicts),
                        "seeds": seeds,
                        "verdicts": verdicts,
                    }
                )
                print(
                    json.dumps({k: v for k, v in report["gate"][-1].items() if k != "verdicts"}),
                    flush=True,
                )
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[10, 20, 40, 0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    emit(study(args.sizes, args.seeds), args.out)


if __name__ == "__main__":
    main()
