"""The fit loop: LoRA training with the transformers Trainer, on the owner's reply tokens.

Length-grouped batches (little padding), cosine schedule with warmup, checkpoints for
`twin train --resume`, one progress bar with loss, tokens/s and ETA. The same code runs in one
process or under `torchrun` / `accelerate launch` (the Trainer does DDP); the recipe
(trainer.train) decides what only the main process does.

Each run keeps its checkpoints in a folder of its own, data_dir/checkpoints/run.<owner> (the
owner tag of the process that launched it, see twin.core.files), so no run deletes another's;
`--resume` continues in the newest folder whose run is gone and takes it over.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from trainer.data import Encoded, collator
from trainer.embedded import EMBEDDED
from trainer.loss import reply_loss_sum
from trainer.metrics import DatasetInfo, TrainingRun
from trainer.model import LoadPlan, keep_4bit_trainable
from twin.core.config import Config
from twin.core.errors import TwinError
from twin.core.files import (
    ensure_private_dir,
    owner_alive,
    owner_of,
    owner_tag,
    write_private_text,
)

# The other ranks wait (in the process group's setup) while the main one measures the base
# before training; a 7B eval takes long. After training they exit without waiting.
DDP_TIMEOUT_S = 6 * 3600


@dataclass(frozen=True)
class FitPlan:
    steps: int
    dataset: DatasetInfo
    resume: bool
    checkpoints: Path  # this run's own folder (see run_checkpoints, or a scratch dir)


def add_lora(model: Any, config: Config, plan: LoadPlan, tokenizer: Any) -> Any:
    """`model` with a LoRA adapter per `[lora]` (and the turn markers of an embedded base
    model made trainable, see trainer.embedded.EmbeddedModel.train_tokens)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    checkpointing = {"use_reentrant": False}  # the re-entrant variant is legacy and breaks DDP
    if plan.quantized:
        keep_4bit_trainable(model)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs=checkpointing
        )
    elif plan.device == "cuda":
        # Activations, not weights, fill a GPU when training a big base in bf16.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        model.enable_input_require_grads()
    targets = list(config.lora.target_modules)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
        trainable_token_indices=_turn_marker_ids(config, tokenizer) or None,
    )
    # LoRA's A matrices start random; the Trainer seeds only later, so without this two runs
    # with the same data, config and seed trained different adapters.
    torch.manual_seed(config.train.seed)
    return get_peft_model(model, lora)


def trained_turn_markers(config: Config) -> tuple[str, ...]:
    """The turn markers a base model never learned, whose embedding rows are trained with the
    adapter (Gemma 3 270M is a pretrained base: its <start_of_turn>/<end_of_turn> rows were
    never trained, so with LoRA alone the twin could not learn to end a reply). Empty for
    other bases."""
    model = EMBEDDED.get(config.model.base)
    return tuple(model.train_tokens) if model is not None else ()


def _turn_marker_ids(config: Config, tokenizer: Any) -> list[int]:
    """Token ids of `trained_turn_markers`."""
    return [int(tokenizer.convert_tokens_to_ids(t)) for t in trained_turn_markers(config)]


def fit(
    model: Any,
    tokenizer: Any,
    train_set: list[Encoded],
    config: Config,
    plan: LoadPlan,
    fit_plan: FitPlan,
    *,
    progress: bool = True,
) -> TrainingRun:
    """Train `model` (a peft model) for `fit_plan.steps` steps; returns what was measured."""
    t = config.train
    out = fit_plan.checkpoints
    marker = out / "dataset.json"
    resume_from = _resume_point(out, marker, fit_plan.dataset) if fit_plan.resume else None
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=fit_plan.steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accumulation,
        learning_rate=t.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=t.warmup_ratio,  # a float below 1 is a ratio of the total steps
        seed=t.seed,
        bf16=plan.mixed and plan.dtype == torch.bfloat16,
        fp16=plan.mixed and plan.dtype == torch.float16,
        use_cpu=plan.device == "cpu",
        # Length-grouped batches: examples of similar length share a batch, so little padding.
        train_sampling_strategy="group_by_length",
        include_num_input_tokens_seen="non_padding",
        logging_steps=max(1, min(10, fit_plan.steps // 10)),
        save_strategy="steps" if t.checkpoint_steps else "no",
        save_steps=t.checkpoint_steps or fit_plan.steps,
        save_total_limit=2,
        report_to="none",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        ddp_timeout=DDP_TIMEOUT_S,
        ddp_find_unused_parameters=False,
    )
    progress_bar = _Progress(enabled=progress)
    trainer = _ReplyLossTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=collator(tokenizer),
        processing_class=tokenizer,
        callbacks=[progress_bar],
    )
    # One bar of our own instead of the Trainer's, which prints raw log dicts between lines.
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    main = trainer.accelerator.is_main_process
    # On resume the folder and its marker stay as they are: the marker holds this sha256
    # already, and the other ranks may be reading it in _resume_point right now. The run
    # takes the folder over, so that no other run sweeps it while this one goes on.
    if main and fit_plan.resume:
        write_private_text(out / OWNER, launcher_tag())
    if main and not fit_plan.resume:
        shutil.rmtree(out, ignore_errors=True)  # only what this same process left before
        ensure_private_dir(out)
        marker.write_text(json.dumps({"sha256": fit_plan.dataset.sha256}))
    trainer.accelerator.wait_for_everyone()
    if plan.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    output = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - progress_bar.started
    tokens = trainer.state.num_input_tokens_seen - progress_bar.tokens_at_start
    steps = trainer.state.global_step
    trainer.accelerator.wait_for_everyone()
    if main:
        shutil.rmtree(out, ignore_errors=True)  # the adapter is about to be registered
    return TrainingRun(
        steps=steps,
        train_loss=float(output.training_loss),
        train_tokens=int(tokens),
        train_seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        seconds_per_step=seconds / max(steps, 1),
        peak_memory_mb=_peak_memory_mb(plan),
        resumed_from=resume_from,
        train_loss_history=tuple(progress_bar.history),
    )


class _ReplyLossTrainer(Trainer):  # type: ignore[misc]
    # Our loss is normalised over the whole accumulated (and, under DDP, global) batch.
    loss_is_scaled_for_ga = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Makes the Trainer count the reply tokens of every micro-batch of a step (across
        # ranks too) and pass the total as num_items_in_batch.
        self.model_accepts_loss_kwargs = True

    def compute_loss(
        self,
        model: Any,
        inputs: Any,
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        loss, n = reply_loss_sum(model, inputs)
        if num_items_in_batch is None:
            loss = loss / max(n, 1)
        else:
            loss = loss / num_items_in_batch
            # DDP averages gradients over ranks; the count above is global, so undo the mean
            # (the base class does the same).
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        return (loss, None) if return_outputs else loss


class _Progress(TrainerCallback):  # type: ignore[misc]
    """One tqdm bar on the main process: step, loss, tokens/s, ETA; keeps the loss curve."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.history: list[dict[str, float]] = []
        self.started = time.perf_counter()
        self.tokens_at_start = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        from tqdm import tqdm

        self.started = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen
        if state.is_world_process_zero:
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc="training",
                unit="step",
                disable=None if self.enabled else True,  # None: on a terminal only
                leave=False,
            )

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self.history.append({"step": state.global_step, "loss": float(logs["loss"])})
        elapsed = time.perf_counter() - self.started
        tokens = state.num_input_tokens_seen - self.tokens_at_start
        if self.bar is not None and elapsed > 0:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", tok_s=f"{tokens / elapsed:.0f}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.bar is not None:
            self.bar.close()


OWNER = "owner"  # in a run's checkpoint folder taken over by --resume: the new owner's tag


def launcher_tag() -> str:
    """The owner tag of the process that launched this run: this one, or under torchrun /
    accelerate launch the launcher that all the ranks share."""
    return owner_tag(os.getppid() if "LOCAL_RANK" in os.environ else None)


def run_checkpoints(root: Path, *, resume: bool) -> Path:
    """This run's checkpoint folder under `root`: a new one of its own, or with `resume` the
    newest one with a complete checkpoint that a run now gone left (or that this run took
    over already: the other ranks ask after the main one did)."""
    mine = launcher_tag()
    if not resume:
        return root / f"run.{mine}"
    left = [
        (max(p.stat().st_mtime for p in complete), folder)
        for folder in (root.glob("run.*") if root.is_dir() else [])
        if _run_owner(folder) == mine or not owner_alive(_run_owner(folder))
        if (complete := [p for p in folder.glob("checkpoint-*") if _checkpoint_is_complete(p)])
    ]
    if not left:
        raise TwinError(
            f"nothing to resume: no complete checkpoint of an interrupted run in {root}; "
            "run `twin train` without --resume"
        )
    return max(left)[1]


def sweep_dead_runs(root: Path) -> int:
    """Remove the checkpoint folders of runs that are gone (a new run starts over) and what
    the layout before per-run folders left; never those of a run going on. Returns how many."""
    if not root.is_dir():
        return 0
    dead = [
        p for p in root.iterdir() if not (p.name.startswith("run.") and owner_alive(_run_owner(p)))
    ]
    for path in dead:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return len(dead)


def _run_owner(folder: Path) -> str:
    try:
        return (folder / OWNER).read_text().strip()
    except OSError:
        return owner_of(folder.name)


def _resume_point(out: Path, marker: Path, dataset: DatasetInfo) -> str:
    """The newest complete checkpoint of the interrupted run on this same dataset."""
    complete = [p for p in out.glob("checkpoint-*") if _checkpoint_is_complete(p)]
    if not complete:
        raise TwinError(
            f"nothing to resume: no complete checkpoint in {out}; run `twin train` without --resume"
        )
    try:
        same = json.loads(marker.read_text())["sha256"] == dataset.sha256
    except (OSError, ValueError, KeyError):
        same = False
    if not same:
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
