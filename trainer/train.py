"""`twin train`: one recipe from "dataset on disk" to "adapter registered", top to bottom.

    setup()     read and check the dataset (before anything expensive), decide the run
    main()      load the base, measure it, add LoRA, fit, measure the twin, prefer, register
    fit()       the loop itself: trainer.fit (transformers Trainer, reply-only loss)
    measure()   held-out loss (trainer.loss) and the fidelity eval (trainer.eval)
    prefer()    the preference stage (trainer.preference), measured again; the better of
                SFT alone and SFT + preference is the one registered

It runs as its own process (`twin train`): the bot and the nightly job start it as a
subprocess, so an out-of-memory crash here never takes the bot down. Under `torchrun` /
`accelerate launch` every rank trains (DDP) and only the main one evaluates and registers,
without the preference stage (it runs in single-process runs); FSDP and DeepSpeed ZeRO-3,
which shard the base, are refused (docs/gpu.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ingest.pii import PiiScrubber
from trainer import registry
from trainer.data import Dataset, Encoded, encode_examples, read_dataset
from trainer.eval.evaluate import (
    HeldOut,
    TrainingSamples,
    headline,
    held_out_replies,
    measure_fidelity,
    sample_replies,
    training_samples,
)
from trainer.fit import (
    FitPlan,
    add_lora,
    fit,
    run_checkpoints,
    sweep_dead_runs,
    trained_turn_markers,
)
from trainer.loss import heldout_loss
from trainer.metrics import AdapterMetrics, Fidelity, PreferenceStage, Sample
from trainer.model import (
    Base,
    base_checkpoint,
    check_cpu_can_train,
    check_not_sharded,
    keep_4bit_trainable,
    load_base,
    load_plan,
)
from trainer.pairs import Correction, corrections_key
from trainer.preference import Figures, choose, run_stage
from twin.core.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    version: str
    path: Path
    promoted: bool
    reason: str
    metrics: AdapterMetrics

    def line(self) -> str:
        m = self.metrics
        verdict = "promoted to current" if self.promoted else f"not promoted: {self.reason}"
        return (
            f"adapter {self.version}: {m.run.steps} steps in {m.seconds:.0f} s, "
            f"{m.run.tokens_per_s:.0f} tokens/s, peak memory {m.run.peak_memory_mb:.0f} MB; "
            f"held-out loss {m.base_eval_loss:.3f} (base) -> {m.eval_loss:.3f} (twin); "
            f"{verdict}"
        )


@dataclass(frozen=True)
class Run:
    """What `setup` decided: the data, the steps, and this process's part in the run."""

    config: Config
    dataset: Dataset
    fit_plan: FitPlan
    main_process: bool
    corrections: tuple[Correction, ...] = ()


def train(
    config: Config,
    *,
    max_steps: int | None = None,
    resume: bool = False,
    progress: bool = True,
    corrections: Sequence[Correction] = (),
) -> TrainResult | None:
    """Train, evaluate and register one adapter; returns what happened (None on the ranks
    other than the main one of a distributed run). `corrections`: the owner's, for the
    preference stage (twin.app.corrections reads them)."""
    run = setup(config, max_steps=max_steps, resume=resume, corrections=corrections)
    return main(run, progress=progress)


def setup(
    config: Config, *, max_steps: int | None, resume: bool, corrections: Sequence[Correction] = ()
) -> Run:
    dataset = read_dataset(config.dataset_dir)  # refuses a too small dataset, cheaply
    check_not_sharded()
    plan = load_plan(config)
    check_cpu_can_train(base_checkpoint(config), plan)
    main_process = int(os.environ.get("RANK", "0")) == 0
    checkpoints = config.data_dir / "checkpoints"
    if main_process and (swept := registry.sweep_incomplete(config.adapters_dir)):
        log.info("removed %d incomplete adapter folder(s) left by a killed run", swept)
    if main_process and not resume and (swept := sweep_dead_runs(checkpoints)):
        log.info("removed the checkpoints of %d interrupted run(s)", swept)
    fit_plan = FitPlan(
        steps=max_steps or config.train.max_steps,
        dataset=dataset.info,
        resume=resume,
        checkpoints=run_checkpoints(checkpoints, resume=resume),
    )
    return Run(config, dataset, fit_plan, main_process, tuple(corrections))


def main(run: Run, *, progress: bool = True) -> TrainResult | None:
    started = time.perf_counter()
    config = run.config
    base = load_base(config)
    if base.plan.quantized:
        keep_4bit_trainable(base.model)  # before the base's held-out loss runs it
    log.info("base %s on %s", config.model.base, base.plan.describe())
    max_seq = config.train.max_seq_tokens
    train_set = encode_examples(base.tokenizer, run.dataset.train, max_seq)
    eval_set = encode_examples(base.tokenizer, run.dataset.eval, max_seq)
    base_loss = 0.0
    if run.main_process:  # the other ranks wait for it in the Trainer's process group setup
        base_loss = validate(base, eval_set, config)
        log.info("base model held-out loss %.4f", base_loss)
    model = add_lora(base.model, config, base.plan, base.tokenizer)
    training = fit(
        model, base.tokenizer, train_set, config, base.plan, run.fit_plan, progress=progress
    )
    if not run.main_process:
        return None  # the main process evaluates and registers
    with contextlib.suppress(OSError):  # no run left checkpoints: no folder
        run.fit_plan.checkpoints.parent.rmdir()
    model.eval()
    twin = Base(model, base.tokenizer, base.checkpoint, base.plan)
    measuring = time.perf_counter()
    sft = measure(twin, eval_set, run.dataset, config)
    spent = time.perf_counter() - started
    chosen, preference = sft, None
    if config.preference.enabled:
        chosen, preference = prefer(
            twin, run, eval_set, sft, spent, time.perf_counter() - measuring
        )
    metrics = AdapterMetrics(
        created=time.time(),
        base_model=config.model.base,
        base_checkpoint=base.checkpoint,
        plan=base.plan.describe(),
        run=training,
        seconds=time.perf_counter() - started,
        base_eval_loss=base_loss,
        eval_loss=chosen.loss,
        eval_examples=len(eval_set),
        dataset=run.dataset.info,
        samples=chosen.samples,
        fidelity=chosen.fidelity,
        training_key=training_key(config, run.dataset.info.sha256, run.corrections),
        preference=preference,
    )
    return register(config, model, metrics)


def validate(base: Base, eval_set: list[Encoded], config: Config) -> float:
    """Held-out loss per reply token: the gate's first measure."""
    return heldout_loss(base.model, base.tokenizer, eval_set, config.train.batch_size, base.plan)


@dataclass(frozen=True)
class Measured:
    """A trained twin's held-out figures: what the gate reads and the adapter keeps."""

    loss: float
    fidelity: Fidelity | None
    samples: tuple[Sample, ...]
    held_out: HeldOut | None  # the replies the fidelity eval read (None: not measured)
    trained: TrainingSamples | None  # its samples of training prompts (None: not measured)

    def figures(self) -> Figures:
        f = self.fidelity
        if f is None:
            return Figures(self.loss)
        semantic = f.full.get("semantic_similarity")
        return Figures(
            self.loss,
            f.style_distance_twin,
            f.auc_twin,
            semantic["twin"] if semantic else None,
        )


def measure(
    twin: Base,
    eval_set: list[Encoded],
    dataset: Dataset,
    config: Config,
    base_replies: list[str] | None = None,
) -> Measured:
    """Held-out loss; the fidelity eval when `[eval] on_train`, and the few sample replies
    kept with the adapter (the eval's own first answers, so nothing is generated twice).
    `base_replies`: the base model's replies from an earlier measure, not generated again."""
    loss = validate(twin, eval_set, config)
    n = config.train.sample_replies
    model, tokenizer = twin.model, twin.tokenizer
    if not config.eval.on_train:
        samples = sample_replies(model, tokenizer, dataset.eval[:n], config)
        return Measured(loss, None, samples, None, None)
    held = held_out_replies(model, tokenizer, dataset.eval, config, base_replies)
    trained = training_samples(model, tokenizer, dataset.train, config)
    result = measure_fidelity(model, tokenizer, dataset.train, dataset.eval, config, held, trained)
    samples = tuple(Sample(**example) for example in result["examples"][:n])
    return Measured(loss, headline(result), samples, held, trained)


def prefer(
    twin: Base,
    run: Run,
    eval_set: list[Encoded],
    sft: Measured,
    spent_s: float,
    measure_s: float,
) -> tuple[Measured, PreferenceStage]:
    """The preference stage on the SFT twin, measured again and judged against SFT alone:
    returns the figures of the twin that stays, and the stage's record. The stage may take
    `[preference] budget_share` of the whole run (`spent_s` so far); measuring the result
    takes about as long as measuring SFT did (`measure_s`), which is kept aside for it."""
    config = run.config
    share = config.preference.budget_share
    budget = spent_s * share / (1 - share)
    train_budget = budget - measure_s  # for sampling and training
    skipped = _why_no_stage(run, sft, train_budget)
    if skipped:
        log.info("preference stage skipped: %s", skipped)
        return sft, PreferenceStage.skipped(skipped, budget, sft.figures())
    started = time.perf_counter()
    model = twin.model
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    scrubber = PiiScrubber(regions=config.dataset.phone_regions)
    assert sft.trained is not None  # _why_no_stage checked
    try:
        stage = run_stage(
            model,
            twin.tokenizer,
            sft.trained,
            run.corrections,
            config,
            twin.plan,
            train_budget,
            scrubber.scrub,
        )
    except Exception as err:  # an optional stage: its failure must not cost the SFT adapter
        log.warning("preference stage failed, SFT alone stays", exc_info=True)
        _restore(model, trainable)
        why = f"failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        return sft, PreferenceStage.skipped(why, budget, sft.figures())
    if stage.steps == 0:
        kept, reason, after = False, "no pairs to learn from, or no time left to train", sft
    else:
        base_replies = sft.held_out.base if sft.held_out else None
        after = measure(twin, eval_set, run.dataset, config, base_replies)
        kept, reason = choose(sft.figures(), after.figures())
    log.info("preference stage: %s", reason)
    if not kept:
        _restore(model, trainable)
    record = PreferenceStage.of(
        stage, kept, reason, budget, time.perf_counter() - started, sft.figures(), after.figures()
    )
    return (after if kept else sft), record


def _restore(model: Any, weights: dict[str, torch.Tensor]) -> None:
    """Back to the SFT adapter, exactly."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in weights:
                param.copy_(weights[name])


def _why_no_stage(run: Run, sft: Measured, train_budget_s: float) -> str:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "it runs in single-process runs; this distributed run keeps SFT alone"
    if trained_turn_markers(run.config):
        # TRL's DPO computes log-probabilities with a fused output head that reads the head's
        # weight directly, which the trained rows of the turn markers are not part of.
        return (
            f"TRL's DPO cannot train {run.config.model.base} yet: its turn markers are "
            "trained with the adapter (a tied output head TRL's fused head cannot read)"
        )
    if sft.fidelity is None or sft.trained is None:
        return "[eval] on_train is off: without the fidelity eval the stage cannot be judged"
    if train_budget_s <= 0:
        return "no time left in its budget ([preference] budget_share) after measuring"
    return ""


def register(config: Config, model: Any, metrics: AdapterMetrics) -> TrainResult:
    """Write the adapter into the registry, run the gate, switch current if it passes."""
    registered = registry.register_adapter(
        config, metrics, lambda folder: model.save_pretrained(folder)
    )
    if registered.pruned:
        log.info("removed old adapters: %s", ", ".join(registered.pruned))
    gate = registered.metrics.gate
    assert gate is not None
    return TrainResult(
        registered.version, registered.path, gate.promote, gate.reason, registered.metrics
    )


def training_key(
    config: Config, dataset_sha256: str, corrections: Sequence[Correction] = ()
) -> str:
    """The dataset (the persona prompt is in it), the owner's corrections and every config key
    that shapes the adapter or the gate's verdict, hashed: two runs with the same key train
    the same adapter (same data, config and seed) and meet the same gate."""
    recipe = {
        "dataset": dataset_sha256,
        "preference": config.preference.model_dump(mode="json"),
        "corrections": corrections_key(corrections) if config.preference.enabled else "",
        "model": config.model.model_dump(mode="json"),
        "lora": config.lora.model_dump(mode="json"),
        "train": config.train.model_dump(
            mode="json", exclude={"keep_adapters", "sample_replies", "checkpoint_steps"}
        ),
        "generation": config.generation.model_dump(mode="json"),
        "eval": config.eval.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
