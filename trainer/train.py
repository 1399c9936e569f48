"""`twin train`: LoRA / QLoRA fine-tuning on the dataset, evaluation, and registration.

One run: read dataset/{train,eval}.jsonl -> tokenize with the shared chat format (loss on the
owner's replies only) -> measure the base model's held-out loss -> train LoRA with the
transformers Trainer (length-grouped batches, cosine schedule with warmup, checkpoints) ->
measure the adapter's held-out loss and sample a few replies -> write the adapter into the
registry -> switch "current" only if it passes the promotion gate.

It runs as its own process (`twin train`): the bot and the nightly job start it as a
subprocess, so an out-of-memory crash here never takes the bot down.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ingest.dataset import dataset_sha256
from trainer import registry
from trainer.eval_report import write_report
from trainer.evaluate import headline, measure_fidelity
from trainer.model import LoadPlan, base_checkpoint, load_base_model, load_plan, load_tokenizer
from twin.chat_format import IGNORE_INDEX, ChatMessage, encode_for_training
from twin.config import Config
from twin.errors import TwinError
from twin.files import ensure_private_dir
from twin.generation import generate_replies

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    version: str
    path: Path
    promoted: bool
    reason: str
    metrics: dict[str, Any]

    def line(self) -> str:
        m = self.metrics
        verdict = "promoted to current" if self.promoted else f"not promoted: {self.reason}"
        return (
            f"adapter {self.version}: {m['steps']} steps in {m['seconds']:.0f} s, "
            f"{m['tokens_per_s']:.0f} tokens/s, peak memory {m['peak_memory_mb']:.0f} MB; "
            f"held-out loss {m['base_eval_loss']:.3f} (base) -> {m['eval_loss']:.3f} (twin); "
            f"{verdict}"
        )


def train(config: Config, *, max_steps: int | None = None, resume: bool = False) -> TrainResult:
    """Train, evaluate and register one adapter; returns what happened."""
    started = time.perf_counter()
    train_rows, eval_rows, dataset_info = read_dataset(config.dataset_dir)
    adapters_dir = config.adapters_dir
    if swept := registry.sweep_incomplete(adapters_dir):
        log.info("removed %d incomplete adapter folder(s) left by a killed run", swept)
    checkpoint = base_checkpoint(config)
    plan = load_plan(config)
    log.info("base %s on %s", config.model.base, plan.describe())
    tokenizer = load_tokenizer(checkpoint)
    max_seq = config.train.max_seq_tokens
    train_set = encode_examples(tokenizer, train_rows, max_seq)
    eval_set = encode_examples(tokenizer, eval_rows, max_seq)
    if not eval_set:
        raise TwinError("the dataset has no eval examples: import more history, then twin dataset")
    model = load_base_model(checkpoint, plan)
    base_loss = heldout_loss(model, tokenizer, eval_set, config.train.batch_size)
    log.info("base model held-out loss %.4f", base_loss)
    model = add_lora(model, config, plan)
    steps = max_steps or config.train.max_steps
    run = run_training(model, tokenizer, train_set, config, plan, steps, dataset_info, resume)
    model.eval()
    twin_loss = heldout_loss(model, tokenizer, eval_set, config.train.batch_size)
    fidelity = None
    if config.eval.on_train:
        result = measure_fidelity(model, tokenizer, train_rows, eval_rows, config)
        fidelity = {**headline(result), "full": result}
        # The eval answered the first held-out prompts already, base and twin: those are the
        # samples; generating them again would only cost time.
        samples = result["examples"][: config.train.sample_replies]
    else:
        samples = sample_replies(model, tokenizer, eval_rows[: config.train.sample_replies], config)
    metrics = {
        "created": time.time(),
        "base_model": config.model.base,
        "base_checkpoint": checkpoint,
        "plan": plan.describe(),
        **run,
        "seconds": time.perf_counter() - started,
        "base_eval_loss": base_loss,
        "eval_loss": twin_loss,
        "base_eval_ppl": math.exp(min(base_loss, 50)),
        "eval_ppl": math.exp(min(twin_loss, 50)),
        "eval_examples": len(eval_set),
        "dataset": dataset_info,
        "samples": samples,
    }
    if fidelity is not None:
        metrics["fidelity"] = fidelity
    return register(config, model, metrics)


def read_dataset(folder: Path) -> tuple[list[list[ChatMessage]], list[list[ChatMessage]], dict]:
    """The examples of train.jsonl and eval.jsonl, and the dataset's identity (hash, sizes)."""
    rows: dict[str, list[list[ChatMessage]]] = {}
    texts: dict[str, str] = {}
    for name in ("train.jsonl", "eval.jsonl"):
        path = folder / name
        if not path.exists():
            raise TwinError(f"{path} is missing: run `twin dataset` first")
        texts[name] = path.read_text(encoding="utf-8")
        rows[name] = [json.loads(line)["messages"] for line in texts[name].splitlines() if line]
    if not rows["train.jsonl"]:
        raise TwinError(f"{folder / 'train.jsonl'} has no examples: import more history first")
    info = {
        "sha256": dataset_sha256(texts),
        "train": len(rows["train.jsonl"]),
        "eval": len(rows["eval.jsonl"]),
    }
    return rows["train.jsonl"], rows["eval.jsonl"], info


def encode_examples(
    tokenizer: Any, examples: list[list[ChatMessage]], max_seq: int
) -> list[dict[str, list[int]]]:
    """Tokenize examples; drop those whose replies were cut away; insist something is learned."""
    encoded = []
    for messages in examples:
        example = encode_for_training(tokenizer, messages, max_seq)
        if any(label != IGNORE_INDEX for label in example.labels):
            encoded.append({"input_ids": example.input_ids, "labels": example.labels})
    if examples and not encoded:
        # Without this check a template or masking mistake would train on nothing, silently.
        raise TwinError("no reply tokens to learn from: every label is masked")
    return encoded


def add_lora(model: Any, config: Config, plan: LoadPlan) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if plan.quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    targets = list(config.lora.target_modules)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def run_training(
    model: Any,
    tokenizer: Any,
    train_set: list[dict[str, list[int]]],
    config: Config,
    plan: LoadPlan,
    steps: int,
    dataset_info: dict,
    resume: bool,
) -> dict[str, Any]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    t = config.train
    out = config.data_dir / "checkpoints"
    marker = out / "dataset.json"
    resume_from = _resume_point(out, marker, dataset_info) if resume else None
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    ensure_private_dir(out)
    marker.write_text(json.dumps(dataset_info))
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accumulation,
        learning_rate=t.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        seed=t.seed,
        bf16=plan.dtype == torch.bfloat16 or plan.quantized,
        use_cpu=plan.device == "cpu",
        # Length-grouped batches: examples of similar length share a batch, so little padding.
        train_sampling_strategy="group_by_length",
        include_num_input_tokens_seen="non_padding",
        logging_steps=max(1, min(10, steps // 10)),
        save_strategy="steps" if t.checkpoint_steps else "no",
        save_steps=t.checkpoint_steps or steps,
        save_total_limit=2,
        report_to="none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    history: list[dict[str, float]] = []

    class Measure(TrainerCallback):  # type: ignore[misc]
        """Adds tokens/s to the progress logs and keeps the loss curve for the report."""

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started = time.perf_counter()
            self.tokens_at_start = state.num_input_tokens_seen

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            elapsed = time.perf_counter() - self.started
            tokens = state.num_input_tokens_seen - self.tokens_at_start
            if logs is not None and elapsed > 0:
                logs["tokens_per_s"] = round(tokens / elapsed, 1)
                if "loss" in logs:
                    history.append({"step": state.global_step, "loss": float(logs["loss"])})

    class ReplyLossTrainer(Trainer):  # type: ignore[misc]
        def compute_loss(
            self,
            model: Any,
            inputs: Any,
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            loss, n = reply_loss_sum(model, inputs)
            # With gradient accumulation the Trainer passes the reply tokens of all micro-batches.
            loss = loss / (num_items_in_batch if num_items_in_batch is not None else max(n, 1))
            return (loss, None) if return_outputs else loss

    measure = Measure()
    trainer = ReplyLossTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=_collator(tokenizer),
        processing_class=tokenizer,
        callbacks=[measure],
    )
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - measure.started
    tokens = trainer.state.num_input_tokens_seen - measure.tokens_at_start
    shutil.rmtree(out, ignore_errors=True)  # the adapter is about to be registered
    return {
        "steps": trainer.state.global_step,
        "train_loss": float(output.training_loss),
        "train_loss_history": history,
        "train_tokens": int(tokens),
        "train_seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "seconds_per_step": seconds / max(trainer.state.global_step, 1),
        "peak_memory_mb": _peak_memory_mb(plan),
        "resumed_from": resume_from,
    }


def _resume_point(out: Path, marker: Path, dataset_info: dict) -> str:
    """The newest complete checkpoint of the interrupted run on this same dataset."""
    complete = [p for p in out.glob("checkpoint-*") if _checkpoint_is_complete(p)]
    if not complete:
        raise TwinError(
            f"nothing to resume: no complete checkpoint in {out}; run `twin train` without --resume"
        )
    if not marker.exists() or json.loads(marker.read_text())["sha256"] != dataset_info["sha256"]:
        raise TwinError(
            "the dataset changed since the interrupted run: train afresh, without --resume"
        )
    return str(max(complete, key=lambda p: int(p.name.split("-")[1])))


def _checkpoint_is_complete(folder: Path) -> bool:
    """The Trainer writes trainer_state.json last: a run killed while saving leaves a folder
    without it (or with it cut short), which must not be resumed from."""
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def _peak_memory_mb(plan: LoadPlan) -> float:
    if plan.device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _collator(tokenizer: Any) -> Any:
    """Pads a batch to its longest example: ids with the pad token, labels with IGNORE_INDEX,
    and the attention mask. Training and evaluation batch the same way."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)


def reply_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the reply tokens of `batch`, and how many there are.

    The output head runs on reply positions only. Most tokens of a chat example are context
    (the system prompt, the other side's messages) whose logits the loss never reads, and on
    a small model the head (vocabulary x hidden) and its softmax are a large share of a step:
    skipping them made training steps about a quarter faster on CPU. Same numbers as the
    model's own loss (tested).
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = batch["labels"][:, 1:]  # tokens < n predict n
    keep = labels != IGNORE_INDEX
    hidden = base.get_decoder()(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    logits = base.get_output_embeddings()(hidden[:, :-1][keep])
    loss = torch.nn.functional.cross_entropy(logits.float(), labels[keep], reduction="sum")
    return loss, int(keep.sum())


def heldout_loss(
    model: Any, tokenizer: Any, examples: list[dict[str, list[int]]], batch_size: int
) -> float:
    """Mean cross-entropy per reply token (the owner's words only) over `examples`."""
    device = next(model.parameters()).device
    collate = _collator(tokenizer)
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda e: len(e["input_ids"]))  # little padding
    with torch.inference_mode():
        for i in range(0, len(ordered), batch_size):
            batch = {k: v.to(device) for k, v in collate(ordered[i : i + batch_size]).items()}
            loss, n = reply_loss_sum(model, batch)
            total += float(loss)
            count += n
    return total / max(count, 1)


def sample_replies(
    model: Any, tokenizer: Any, examples: list[list[ChatMessage]], config: Config
) -> list[dict[str, str]]:
    """For a few eval prompts: the message, the owner's real reply, the base's and the twin's."""
    prompts = [e[: max(i for i, m in enumerate(e) if m["role"] == "assistant")] for e in examples]
    if not prompts:
        return []
    torch.manual_seed(config.train.seed)
    twin = generate_replies(model, tokenizer, prompts, config.generation)
    with model.disable_adapter():
        base = generate_replies(model, tokenizer, prompts, config.generation)
    return [
        {"message": p[-1]["content"], "real": e[len(p)]["content"], "base": b, "twin": t}
        for p, e, b, t in zip(prompts, examples, base, twin, strict=True)
    ]


def register(config: Config, model: Any, metrics: dict[str, Any]) -> TrainResult:
    """Write the adapter into the registry, run the gate, switch current if it passes."""
    adapters_dir = config.adapters_dir
    current = registry.current_version(adapters_dir)
    current_metrics = registry.read_metrics(adapters_dir / current) if current else None
    decision = registry.promotion_gate(
        metrics, current_metrics, config.train.promote_tolerance, config.eval
    )
    version = registry.new_version(adapters_dir)
    metrics = {
        **metrics,
        "version": version,
        "gate": {"promote": decision.promote, "reason": decision.reason},
    }

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        settings = {
            "lora": dataclasses.asdict(config.lora),
            "train": dataclasses.asdict(config.train),
            "model": dataclasses.asdict(config.model),
        }
        (folder / "train_config.json").write_text(json.dumps(settings, indent=1))
        (folder / registry.METRICS).write_text(json.dumps(metrics, indent=1, ensure_ascii=False))
        if "fidelity" in metrics:
            write_report(folder, metrics)

    path = registry.write_adapter(adapters_dir, version, write)
    if decision.promote:
        registry.set_current(adapters_dir, version)
    pruned = registry.prune(adapters_dir, config.train.keep_adapters)
    if pruned:
        log.info("removed old adapters: %s", ", ".join(pruned))
    return TrainResult(version, path, decision.promote, decision.reason, metrics)
