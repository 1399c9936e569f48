"""Benchmark: training throughput of `twin train` against a naive loop, and its MFU.

Both train the same LoRA (the config's r, alpha, targets) on the embedded SmolLM2 with the
demo persona's dataset, for the same number of steps of the same batch size:
- twin: `trainer.train.run_training` (HF Trainer, length-grouped batches padded per batch,
  the dtype `load_plan` picks on this machine);
- naive: batches in dataset order padded to the longest example of the whole set, fp32,
  a plain PyTorch loop with AdamW.
Throughput counts real (non-padding) tokens only. MFU = model FLOP/s / the peak matmul FLOP/s
measured in the same run with the training dtype; model FLOPs = 6 x parameters x tokens (the
usual convention; with a frozen base the true count is nearer 4 x, also reported).

    .venv/bin/python -m bench.training [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import emit
from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.store import open_store
from trainer.data import encode_examples, read_dataset
from trainer.fit import FitPlan, add_lora, fit
from trainer.model import LoadPlan, base_checkpoint, load_base, load_base_model, load_tokenizer
from twin.app.demo import PERSONAS, demo_export_path
from twin.core.chat_format import IGNORE_INDEX
from twin.core.config import Config
from twin.core.loading import load_config


def demo_setup(folder: Path) -> Config:
    """The demo persona's store and dataset in `folder`, with the demo's [train] config."""
    (folder / "config.toml").write_text(PERSONAS["en"].config)
    config = load_config(folder / "config.toml")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    with open_store(config.store_path) as store:
        import_export(demo_export_path(), store)
        build_dataset(config, store)
    return config


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of large square matmuls in `dtype` on this machine, now."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up
    started, runs = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        torch.matmul(a, b)
        runs += 1
    return 2 * n**3 * runs / (time.perf_counter() - started)


def twin_training(config: Config, steps: int) -> dict[str, Any]:
    base = load_base(config)
    dataset = read_dataset(config.dataset_dir)
    train_set = encode_examples(base.tokenizer, dataset.train, config.train.max_seq_tokens)
    model = add_lora(base.model, config, base.plan, base.tokenizer)
    plan = FitPlan(steps, dataset.info, False, config.data_dir / "checkpoints")
    run = fit(model, base.tokenizer, train_set, config, base.plan, plan, progress=False)
    params = sum(p.numel() for p in model.parameters())
    return {
        "dtype": str(base.plan.dtype).removeprefix("torch."),
        "tokens": run.train_tokens,
        "seconds": run.train_seconds,
        "tokens_per_s": run.tokens_per_s,
        "parameters": params,
    }


def naive_training(config: Config, steps: int) -> dict[str, Any]:
    checkpoint = base_checkpoint(config)
    plan = LoadPlan("cpu", torch.float32, False)
    tokenizer = load_tokenizer(checkpoint)
    train_rows = read_dataset(config.dataset_dir).train
    examples = encode_examples(tokenizer, train_rows, config.train.max_seq_tokens)
    model = add_lora(load_base_model(checkpoint, plan), config, plan, tokenizer)
    model.train()
    longest = max(len(e["input_ids"]) for e in examples)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.train.learning_rate
    )
    size = config.train.batch_size
    tokens, started = 0, time.perf_counter()
    for step in range(steps):
        batch = [examples[(step * size + i) % len(examples)] for i in range(size)]
        ids = torch.full((size, longest), tokenizer.pad_token_id)
        labels = torch.full((size, longest), IGNORE_INDEX)
        mask = torch.zeros((size, longest), dtype=torch.long)
        for row, example in enumerate(batch):
            n = len(example["input_ids"])
            ids[row, :n] = torch.tensor(example["input_ids"])
            labels[row, :n] = torch.tensor(example["labels"])
            mask[row, :n] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(mask.sum())
    seconds = time.perf_counter() - started
    return {
        "dtype": "float32",
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "padded_to": longest,
    }


def measure_training(steps: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        config = demo_setup(Path(folder)).with_section("eval", on_train=False)
        twin = twin_training(config, steps)
        naive = naive_training(config, steps)
    dtype = getattr(torch, twin["dtype"])
    peak = matmul_peak(dtype)
    flops_6 = 6 * twin["parameters"] * twin["tokens_per_s"]
    return {
        "steps": steps,
        "twin": twin,
        "naive": naive,
        "speedup": twin["tokens_per_s"] / naive["tokens_per_s"],
        "matmul_peak_flops": peak,
        "model_flops_6nt": flops_6,
        "mfu": flops_6 / peak,
        "mfu_4nt": flops_6 * 4 / 6 / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    emit(measure_training(args.steps), args.out)


if __name__ == "__main__":
    main()
