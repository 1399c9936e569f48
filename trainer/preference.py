"""The preference stage: after SFT, DPO on what the owner would send over what the twin wrote.

    sample   the SFT twin answers training prompts (and the corrections that need a sample),
             as the bot would: its [generation] settings, memory blocks and guidance
    pairs    trainer.pairs: the owner's real reply over the twin's sample; corrections
    train    TRL's DPOTrainer on the SFT adapter, against a frozen copy of it as reference
    judge    `choose`: the held-out figures of SFT alone and SFT + preference; the better stays

DPO (TRL's DPOTrainer, sigmoid loss) because every source gives pairs: a skipped draft is
paired with a fresh sample, an edit with its draft. The reference is the SFT adapter, not the
base: TRL copies a PEFT model's adapter into a frozen "ref" adapter, which is removed again
before the adapter is saved. The stage has a time budget (`[preference] budget_share` of the
run); it stops training when the budget is spent, and is skipped when too little is left.
"""

from __future__ import annotations

import logging
import math
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from trainer.eval.evaluate import TrainingSamples, generate_all
from trainer.model import LoadPlan
from trainer.pairs import (
    Correction,
    Pair,
    correction_pairs,
    encode_pair,
    history_pairs,
)
from twin.core.config import Config

log = logging.getLogger(__name__)

# A preference-trained twin is kept only when its held-out loss is at most this much (as a
# share) above SFT alone's: DPO moves probability between replies, a little loss is its price.
MAX_LOSS_INCREASE = 0.02


@dataclass(frozen=True)
class Figures:
    """The held-out figures the choice compares (None: not measured)."""

    eval_loss: float
    style_distance: float | None = None
    auc: float | None = None
    semantic_similarity: float | None = None


@dataclass(frozen=True)
class StageRun:
    """What the stage did, before it is judged."""

    pairs: dict[str, int]  # by source, distinct pairs (a correction counts once)
    trained_pairs: int  # with corrections repeated
    dropped: int  # same text on both sides, or too long to encode
    steps: int
    seconds: float  # sampling and training
    sampling_seconds: float
    train_loss: float | None
    # Share of the pairs, as each step met them, whose chosen reply the twin already preferred
    # (over the reference: the SFT adapter); the mean over the stage's steps.
    reward_accuracy: float | None
    corrections_used: tuple[int, ...] = field(default=())


def choose(sft: Figures, preferred: Figures) -> tuple[bool, str]:
    """Keep SFT + preference only when it is harder to tell from the owner (lower real-vs-
    twin AUC), its style is not further from theirs, and its held-out loss is at most
    MAX_LOSS_INCREASE worse; else SFT alone. Without AUCs, a style distance that is lower."""
    most = sft.eval_loss * (1 + MAX_LOSS_INCREASE)
    if preferred.eval_loss > most:
        return False, (
            f"held-out loss {preferred.eval_loss:.4f} with preference is more than "
            f"{MAX_LOSS_INCREASE:.0%} above SFT alone's {sft.eval_loss:.4f}"
        )
    if sft.style_distance is None or preferred.style_distance is None:
        return False, "no fidelity figures to judge the preference stage by"
    if preferred.style_distance > sft.style_distance:
        return False, (
            f"style distance {preferred.style_distance:.3f} with preference is above SFT "
            f"alone's {sft.style_distance:.3f}"
        )
    if sft.auc is not None and preferred.auc is not None:
        if preferred.auc >= sft.auc:
            return False, (
                f"real-vs-twin AUC {preferred.auc:.3f} with preference is not below SFT "
                f"alone's {sft.auc:.3f}"
            )
        return True, f"real-vs-twin AUC {sft.auc:.3f} -> {preferred.auc:.3f} with preference"
    if preferred.style_distance < sft.style_distance:
        return True, (
            f"style distance {sft.style_distance:.3f} -> {preferred.style_distance:.3f} "
            "with preference"
        )
    return False, "the preference stage changed none of the held-out figures"


def run_stage(
    model: Any,
    tokenizer: Any,
    trained: TrainingSamples,
    corrections: Sequence[Correction],
    config: Config,
    plan: LoadPlan,
    budget_s: float,
    scrub: Callable[[str], str],
) -> StageRun:
    """Build pairs from the SFT twin's samples of training prompts (`trained`) and from the
    corrections, and train `model` (a peft model, its SFT adapter "default") on them with DPO
    for at most `budget_s` seconds in all. The model comes back in eval mode."""
    started = time.perf_counter()
    p = config.preference
    kept = list(corrections)[-p.max_pairs :]  # the newest when there are more
    room = p.max_pairs - len(kept)
    sampled = [c for c in kept if c.needs_sample]
    model.eval()
    torch.manual_seed(config.train.seed + 1)  # not the eval's seed: other draws than its own
    fresh = dict(
        zip(
            (c.correction_id for c in sampled),
            generate_all(model, tokenizer, [c.prompt for c in sampled], config.generation),
            strict=True,
        )
    )
    sampling_s = time.perf_counter() - started
    history = history_pairs(
        list(zip(trained.prompts[:room], trained.real[:room], strict=True)), trained.twin[:room]
    )
    corrected = correction_pairs(kept, fresh, scrub, p.correction_weight)
    reply_tokens = config.generation.max_new_tokens
    encoded_pairs = [
        (pair, e)
        for pair in _in_order(history, corrected, config.train.seed)
        if (e := encode_pair(tokenizer, pair, config.train.max_seq_tokens, reply_tokens))
    ]
    encoded = [e for _, e in encoded_pairs]
    used = sorted(
        {pair.correction_id for pair, _ in encoded_pairs if pair.correction_id is not None}
    )
    distinct = {
        "history": sum(pair.source == "history" for pair, _ in encoded_pairs),
        "correction": len(used),
    }
    dropped = min(room, len(trained.prompts)) + len(kept) - sum(distinct.values())
    left = budget_s - (time.perf_counter() - started)
    steps, train_loss, accuracy = 0, None, None
    if encoded and left > 0:
        steps, train_loss, accuracy = _train(model, tokenizer, encoded, config, plan, left)
    model.eval()
    return StageRun(
        pairs=distinct,
        trained_pairs=len(encoded),
        dropped=dropped,
        steps=steps,
        seconds=time.perf_counter() - started,
        sampling_seconds=sampling_s,
        train_loss=train_loss,
        reward_accuracy=accuracy,
        corrections_used=tuple(used),
    )


def _in_order(history: list[Pair], corrected: list[Pair], seed: int) -> list[Pair]:
    """The order the pairs are trained in: one of each correction first (the budget may stop
    training before the end, and the corrections are what the owner asked for), then the
    history's and the corrections' other copies, shuffled (seeded)."""
    first: dict[int | None, Pair] = {}
    rest = list(history)
    for pair in corrected:
        if pair.correction_id in first:
            rest.append(pair)
        else:
            first[pair.correction_id] = pair
    random.Random(seed).shuffle(rest)
    return [*first.values(), *rest]


def _train(
    model: Any,
    tokenizer: Any,
    encoded: list[dict[str, list[int]]],
    config: Config,
    plan: LoadPlan,
    budget_s: float,
) -> tuple[int, float | None, float | None]:
    """DPO with an NLL term on the chosen reply (RPO: it keeps the owner's own replies likely
    while their margin over the twin's grows) on the encoded pairs: one pass, or until
    `budget_s` is spent."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class PairsTrainer(DPOTrainer):  # type: ignore[misc]
        def _prepare_dataset(self, dataset: Any, *args: Any, **kwargs: Any) -> Any:
            # The pairs come tokenized with twin's own chat format (trainer.pairs), exactly as
            # SFT and serving render a prompt: TRL's own tokenizing would render them anew.
            return dataset

    p, t = config.preference, config.train
    batch = max(1, t.batch_size // 2)  # each pair is two sequences
    steps = max(1, math.ceil(len(encoded) / batch))
    deadline = _Deadline(budget_s)
    with tempfile.TemporaryDirectory(prefix="twin-preference-") as scratch:
        args = DPOConfig(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=batch,
            learning_rate=p.learning_rate,
            lr_scheduler_type="cosine",
            train_sampling_strategy="sequential",  # the order _in_order chose
            warmup_steps=0.1,
            beta=p.beta,
            loss_type=["sigmoid", "sft"],
            loss_weights=[1.0, 0.2],
            seed=t.seed,
            bf16=plan.mixed and plan.dtype == torch.bfloat16,
            fp16=plan.mixed and plan.dtype == torch.float16,
            use_cpu=plan.device == "cpu",
            gradient_checkpointing=plan.quantized or plan.device == "cuda",
            gradient_checkpointing_kwargs={"use_reentrant": False},
            max_length=t.max_seq_tokens,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = PairsTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(encoded),
            processing_class=tokenizer,
            callbacks=[deadline],
        )
        trainer.remove_callback(PrinterCallback)  # raw log dicts on stdout
        try:
            output = trainer.train()
        finally:
            if "ref" in getattr(model, "peft_config", {}):
                model.delete_adapter("ref")  # TRL's frozen copy of the SFT adapter
            model.set_adapter("default")
    history = trainer.state.log_history
    accuracies = [h["rewards/accuracies"] for h in history if "rewards/accuracies" in h]
    accuracy = sum(accuracies) / len(accuracies) if accuracies else None
    return trainer.state.global_step, float(output.training_loss), accuracy


class _Deadline(TrainerCallback):  # type: ignore[misc]
    """Stops training once its time budget is spent (the step under way finishes)."""

    def __init__(self, budget_s: float) -> None:
        self.ends = time.perf_counter() + budget_s

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if time.perf_counter() >= self.ends:
            control.should_training_stop = True
