"""The loss twin trains and gates on: cross-entropy over the owner's reply tokens only."""

from __future__ import annotations

from typing import Any

import torch

from trainer.data import Encoded, collator
from trainer.model import LoadPlan
from twin.core.chat_format import IGNORE_INDEX


def reply_loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the reply tokens of `batch`, and how many there are.

    The output head runs only at positions that predict a reply token in some row of the batch
    (`logits_to_keep`): most tokens of a chat example are context whose logits the loss never
    reads, and on a small model the head (vocabulary x hidden) and its softmax are a large
    share of a step. It goes through the model's own forward, so whatever wraps it applies:
    DDP's gradient sync, accelerate's autocast, a model's logit soft-capping. Same numbers
    as the model's own loss (tested).
    """
    labels = batch["labels"][:, 1:]  # tokens < n predict n
    keep = labels != IGNORE_INDEX
    positions = keep.any(dim=0).nonzero().squeeze(-1)
    output = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=positions,
        use_cache=False,  # a KV cache is for generating, never read here
    )
    chosen = keep[:, positions]
    logits = output.logits[chosen]
    targets = labels[:, positions][chosen]
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
    return loss, int(keep.sum())


def heldout_loss(
    model: Any, tokenizer: Any, examples: list[Encoded], batch_size: int, plan: LoadPlan
) -> float:
    """Mean cross-entropy per reply token (the owner's words only) over `examples`, under the
    precision training runs with, so base and twin are measured alike (the gate compares)."""
    device = next(model.parameters()).device
    collate = collator(tokenizer)
    total, count = 0.0, 0
    ordered = sorted(examples, key=lambda e: len(e["input_ids"]))  # little padding
    with torch.inference_mode(), plan.autocast():
        for i in range(0, len(ordered), batch_size):
            batch = {k: v.to(device) for k, v in collate(ordered[i : i + batch_size]).items()}
            loss, n = reply_loss_sum(model, batch)
            total += float(loss)
            count += n
    return total / max(count, 1)
