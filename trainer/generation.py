"""Generating the twin's replies: one function for `twin chat`, the bot and training samples.

Several conversations go through one `generate` call (left padding; each row stops at its own
end-of-turn), which on CPU is several times the throughput of one-at-a-time.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from twin.core.chat_format import encode_prompt
from twin.core.config import GenerationConfig
from twin.core.conversation import ChatMessage


def generate_replies(
    model: Any,
    tokenizer: Any,
    conversations: list[list[ChatMessage]],
    generation: GenerationConfig,
    *,
    stop: threading.Event | None = None,
) -> list[str]:
    """The assistant's next message for each conversation (formatted the training way).

    `stop`, once set, ends the generation after the current token (the bot is shutting down).
    """
    if not conversations:
        return []
    prompts = [encode_prompt(tokenizer, conversation) for conversation in conversations]
    # Generation appends on the right, so pad on the left; per call, not by changing the
    # tokenizer's own setting, which the training collator also reads.
    batch = tokenizer.pad(
        {"input_ids": prompts}, padding=True, padding_side="left", return_tensors="pt"
    )
    device = next(model.parameters()).device
    sampling = generation.temperature > 0
    with torch.inference_mode():
        output = model.generate(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            max_new_tokens=generation.max_new_tokens,
            do_sample=sampling,
            temperature=generation.temperature if sampling else None,
            top_p=generation.top_p if sampling else None,
            repetition_penalty=generation.repetition_penalty,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_tokens(tokenizer),
            stopping_criteria=_when_set(stop),
        )
    new_tokens = output[:, batch["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


def stop_tokens(tokenizer: Any) -> list[int]:
    """End-of-turn markers: the tokenizer's EOS plus the chat template's turn terminators."""
    stops = {tokenizer.eos_token_id}
    for marker in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token = tokenizer.convert_tokens_to_ids(marker)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            stops.add(token)
    return sorted(t for t in stops if t is not None)


def _when_set(stop: threading.Event | None) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    if stop is None:
        return None
    flag = stop

    class WhenSet(StoppingCriteria):  # type: ignore[misc]
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), flag.is_set(), dtype=torch.bool)

    return StoppingCriteriaList([WhenSet()])
