"""The dataset as the trainer sees it: examples read from dataset/*.jsonl, tokenized with the
shared chat format (loss on the owner's replies only), and batched."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest.dataset import MIN_EVAL_EXAMPLES, MIN_TRAIN_EXAMPLES, dataset_sha256
from trainer.metrics import DatasetInfo
from twin.core.chat_format import IGNORE_INDEX, encode_for_training
from twin.core.conversation import ChatMessage
from twin.core.errors import TwinError

Encoded = dict[str, list[int]]


@dataclass(frozen=True)
class Dataset:
    train: list[list[ChatMessage]]
    eval: list[list[ChatMessage]]
    info: DatasetInfo


def read_dataset(folder: Path) -> Dataset:
    """The examples of train.jsonl and eval.jsonl, and the dataset's identity (hash, sizes).

    Refuses, before anything expensive happens, a dataset too small to train on or to
    evaluate: a model conversion and a training run that end in "no eval examples" waste
    minutes and teach nothing.
    """
    rows: dict[str, list[list[ChatMessage]]] = {}
    texts: dict[str, str] = {}
    for name in ("train.jsonl", "eval.jsonl"):
        path = folder / name
        if not path.exists():
            raise TwinError(f"{path} is missing: run `twin dataset` first")
        texts[name] = path.read_text(encoding="utf-8")
        try:
            rows[name] = [json.loads(line)["messages"] for line in texts[name].splitlines() if line]
        except (ValueError, KeyError, TypeError):
            raise TwinError(f"{path} is damaged: run `twin dataset` again") from None
    train, eval_ = rows["train.jsonl"], rows["eval.jsonl"]
    if len(train) < MIN_TRAIN_EXAMPLES or len(eval_) < MIN_EVAL_EXAMPLES:
        raise TwinError(
            f"the dataset is too small: {len(train)} training and {len(eval_)} held-out "
            f"examples (at least {MIN_TRAIN_EXAMPLES} and {MIN_EVAL_EXAMPLES} are needed); "
            "import more history (`twin ingest ...`), then `twin dataset`"
        )
    info = DatasetInfo(sha256=dataset_sha256(texts), train=len(train), eval=len(eval_))
    return Dataset(train, eval_, info)


def encode_examples(
    tokenizer: Any, examples: list[list[ChatMessage]], max_seq: int
) -> list[Encoded]:
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


def collator(tokenizer: Any) -> Any:
    """Pads a batch to its longest example: ids with the pad token, labels with IGNORE_INDEX,
    and the attention mask. Training and evaluation batch the same way."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
