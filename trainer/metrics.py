"""What an adapter's metrics.json holds, as types: the trainer writes it, the gate, the registry,
`twin status`, the demo and the bot's reports read it.

A metrics.json that cannot be read as this structure (truncated by a full disk, `{}`, written
by hand) raises `MetricsUnreadable`, which the registry turns into "skip this adapter, with a
warning that names it": one damaged old adapter must not stop the bot or `twin status`.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

METRICS = "metrics.json"


class MetricsUnreadable(Exception):
    """metrics.json is missing, damaged or not an adapter's metrics; the message says which."""


@dataclass(frozen=True)
class DatasetInfo:
    sha256: str
    train: int
    eval: int


@dataclass(frozen=True)
class Sample:
    """A held-out message, the owner's real reply, and what the base and the twin wrote."""

    message: str
    real: str
    base: str
    twin: str


@dataclass(frozen=True)
class Fidelity:
    """The headline of `twin eval` (the gate reads these); `full` is the whole report."""

    style_distance_base: float
    style_distance_twin: float
    auc_base: float | None
    auc_twin: float | None
    memorization_rate: float
    pii_in_replies: int
    full: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class FactRecall:
    """The fact-recall benchmark (trainer.eval.memory), as `fidelity.full.memory.fact_recall`
    holds it. Every figure is the share of the recall questions whose reply holds the expected
    answer: greedy with memory and memory guidance, with memory and plain decoding (guidance
    0), without memory; then at the serving temperature, averaged over `draws` seeded draws.
    Leaks: replies to questions in one chat that wrote a secret told in another."""

    probes: int
    memory_guidance: float  # what the guided replies were decoded with
    guidance_note: str  # why that is not the configured value ("" when it is)
    recall_guided: float
    recall_plain: float
    recall_without_memory: float
    temperature: float  # the sampled figures' settings: the config's [generation]
    top_p: float
    draws: int  # 0: the config decodes greedily, so the sampled figures are the greedy ones
    sampled_recall_guided: float | None
    sampled_recall_plain: float | None
    answer_retrieved: float  # share of probes whose fact was in the memory block
    leak_probes: int
    leaks_guided: int
    leaks_plain: int
    retrieval_leaks: int  # secrets of another chat that reached the memory block
    # Per recall question: question, expect, the guided / plain / no-memory replies, and
    # whether the guided one holds the answer (the demo shows one; metrics.json keeps them).
    examples: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def line(self) -> str:
        sampled = (
            f"sampled at T {self.temperature:g} over {self.draws} draws: "
            f"{self.sampled_recall_guided or 0:.0%} guided, {self.sampled_recall_plain or 0:.0%} "
            "plain"
            if self.draws
            else "no sampled figures: the config decodes greedily"
        )
        guidance = f"memory guidance {self.memory_guidance:g}"
        if self.guidance_note:
            guidance += f" [{self.guidance_note}]"
        return (
            f"fact recall: {self.recall_guided:.0%} guided, {self.recall_plain:.0%} plain, "
            f"{self.recall_without_memory:.0%} without memory ({self.probes} questions, greedy, "
            f"{guidance}; {sampled}); the fact was in the block for {self.answer_retrieved:.0%}; "
            f"cross-chat leaks: {self.leaks_guided} written guided, {self.leaks_plain} plain, "
            f"{self.retrieval_leaks} recalled ({self.leak_probes} probes)"
        )


def fact_recall_line(data: dict[str, Any]) -> str:
    """The benchmark's line from metrics.json, whichever version wrote it. Before memory
    guidance there was one "with memory" figure (decoded as that version decoded)."""
    if "recall_guided" in data:
        known = {f.name for f in fields(FactRecall)}
        return FactRecall(**{k: v for k, v in data.items() if k in known}).line()
    return (
        f"fact recall: {data['recall_with_memory']:.0%} with memory, "
        f"{data['recall_without_memory']:.0%} without; cross-chat leaks "
        f"{data['leaks']} written, {data['retrieval_leaks']} recalled"
    )


@dataclass(frozen=True)
class PreferenceStage:
    """What the preference stage (trainer.preference) did, as metrics.json's `preference`:
    the pairs by source (distinct; a correction counts once however often it is repeated),
    the steps and seconds, and the held-out figures of SFT alone and with the stage, which
    decided whether it was `kept`. `preferred` is None when it did not train."""

    kept: bool
    reason: str
    pairs: dict[str, int]
    steps: int
    seconds: float  # sampling, training and measuring the result
    budget_seconds: float
    sft: dict[str, float | None]
    preferred: dict[str, float | None] | None = None
    trained_pairs: int = 0  # corrections repeated
    dropped: int = 0
    sampling_seconds: float = 0.0
    train_loss: float | None = None
    reward_accuracy: float | None = None
    corrections_used: tuple[int, ...] = ()

    @classmethod
    def skipped(cls, reason: str, budget_s: float, sft: Any) -> PreferenceStage:
        return cls(False, reason, {}, 0, 0.0, budget_s, asdict(sft))

    @classmethod
    def of(
        cls,
        stage: Any,
        kept: bool,
        reason: str,
        budget_s: float,
        seconds: float,
        sft: Any,
        preferred: Any,
    ) -> PreferenceStage:
        """From trainer.preference's StageRun and Figures."""
        return cls(
            kept=kept,
            reason=reason,
            pairs=dict(stage.pairs),
            steps=stage.steps,
            seconds=seconds,
            budget_seconds=budget_s,
            sft=asdict(sft),
            preferred=asdict(preferred) if stage.steps else None,
            trained_pairs=stage.trained_pairs,
            dropped=stage.dropped,
            sampling_seconds=stage.sampling_seconds,
            train_loss=stage.train_loss,
            reward_accuracy=stage.reward_accuracy,
            corrections_used=tuple(stage.corrections_used) if kept else (),
        )

    def line(self) -> str:
        """One line for the nightly report and the demo."""
        if not self.steps:
            return f"preference stage: skipped ({self.reason})"
        history, corrections = self.pairs.get("history", 0), self.pairs.get("correction", 0)
        verdict = "kept" if self.kept else "not kept, SFT alone stays"
        return (
            f"preference stage: {history} pairs from history and {corrections} corrections, "
            f"{self.steps} steps, {self.seconds:.0f} s; {verdict}: {self.reason}"
        )


@dataclass(frozen=True)
class Gate:
    promote: bool
    reason: str


@dataclass(frozen=True)
class TrainingRun:
    """What the fit loop measured."""

    steps: int
    train_loss: float
    train_tokens: int
    train_seconds: float
    tokens_per_s: float
    seconds_per_step: float
    peak_memory_mb: float
    resumed_from: str | None = None
    train_loss_history: tuple[dict[str, float], ...] = ()


@dataclass(frozen=True)
class AdapterMetrics:
    created: float
    base_model: str
    base_checkpoint: str
    plan: str
    run: TrainingRun
    seconds: float
    base_eval_loss: float
    eval_loss: float
    eval_examples: int
    dataset: DatasetInfo
    samples: tuple[Sample, ...] = ()
    fidelity: Fidelity | None = None
    version: str = ""
    gate: Gate | None = None
    # Every setting that shaped training, hashed with the dataset (see twin.core.runs).
    training_key: str = ""
    preference: PreferenceStage | None = None

    @property
    def base_eval_ppl(self) -> float:
        return math.exp(min(self.base_eval_loss, 50))

    @property
    def eval_ppl(self) -> float:
        return math.exp(min(self.eval_loss, 50))

    @property
    def promoted_by_gate(self) -> bool | None:
        return self.gate.promote if self.gate is not None else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        # metrics.json stays flat, as adapters written by earlier versions have it.
        data.update(data.pop("run"))
        data["base_eval_ppl"], data["eval_ppl"] = self.base_eval_ppl, self.eval_ppl
        return data

    @classmethod
    def from_json(cls, data: Any) -> AdapterMetrics:
        if not isinstance(data, dict):
            raise MetricsUnreadable("is damaged (not a JSON object)")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise MetricsUnreadable(f"is damaged (no {', '.join(missing[:3])}{more})")
        try:
            run_values = {f.name: data[f.name] for f in fields(TrainingRun) if f.name in data}
            run_values["train_loss_history"] = tuple(run_values.get("train_loss_history", ()))
            run = TrainingRun(**run_values)
            dataset = DatasetInfo(**data["dataset"])
            fidelity = data.get("fidelity")
            gate = data.get("gate")
            preference = data.get("preference")
            return cls(
                created=float(data["created"]),
                base_model=str(data["base_model"]),
                base_checkpoint=str(data["base_checkpoint"]),
                plan=str(data["plan"]),
                run=run,
                seconds=float(data["seconds"]),
                base_eval_loss=float(data["base_eval_loss"]),
                eval_loss=float(data["eval_loss"]),
                eval_examples=int(data["eval_examples"]),
                dataset=dataset,
                samples=tuple(Sample(**s) for s in data.get("samples", ())),
                fidelity=Fidelity(**fidelity) if fidelity else None,
                version=str(data.get("version", "")),
                gate=Gate(**gate) if gate else None,
                training_key=str(data.get("training_key", "")),
                preference=_preference(preference) if preference else None,
            )
        except (TypeError, ValueError):
            raise MetricsUnreadable("is damaged (a value of the wrong type or shape)") from None


def _preference(data: dict[str, Any]) -> PreferenceStage:
    data = {**data, "corrections_used": tuple(data.get("corrections_used", ()))}
    return PreferenceStage(**data)


def _required(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


# The keys every adapter's metrics.json has: the fields without a default, flat as `to_json`
# writes them (the run's own fields at the top level); the rest is optional.
_REQUIRED = (*_required(TrainingRun), *(k for k in _required(AdapterMetrics) if k != "run"))


def read_metrics(folder: Path) -> AdapterMetrics:
    """The metrics of the adapter in `folder`; raises MetricsUnreadable."""
    try:
        data = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MetricsUnreadable(f"{folder.name}: no {METRICS}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise MetricsUnreadable(
            f"{folder.name}: {METRICS} is damaged ({type(err).__name__})"
        ) from None
    try:
        return AdapterMetrics.from_json(data)
    except MetricsUnreadable as err:
        raise MetricsUnreadable(f"{folder.name}: {METRICS} {err}") from None
