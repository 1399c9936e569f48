"""Preference pairs: a reply the owner would send, preferred over one the twin wrote.

Two sources, both trained on by the preference stage (trainer.preference):
- history: for a training conversation, the owner's real reply (chosen) over the SFT twin's
  own sample for the same prompt (rejected), as in DITTO (demonstrations preferred over the
  model's samples). The samples are those the fidelity eval has the twin write to measure
  memorization (trainer.eval.evaluate.training_samples): nothing is generated twice;
- corrections: the owner's verdicts on the twin's Business drafts and rated /persona samples
  (bot.db; twin.app reads them and hands them over as `Correction`s):
      edited              the text the owner sent, over the draft
      sent, liked         the draft, over a fresh sample of the twin
      skipped, disliked   a fresh sample of the twin, over the draft
  Each is repeated `[preference] correction_weight` times: a correction is few and precise.

A pair whose two replies are the same text (after case and spacing) is dropped: a reply is
never preferred over itself. Corrections are PII-masked once more with the dataset's scrubber
(the bot masked them when it kept them). Each correction's prompt is the one its draft was
written from, with that chat's own memory block: nothing of one chat reaches another's prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from twin.core.chat_format import (
    IGNORE_INDEX,
    PromptTooLong,
    encode_for_training,
    encode_prompt,
    fit_prompt,
)
from twin.core.conversation import ChatMessage

Source = Literal["history", "correction"]
# The verdicts whose other side is a fresh sample of the twin, and which side the draft takes.
DRAFT_CHOSEN = ("sent", "liked")
DRAFT_REJECTED = ("skipped", "disliked")


@dataclass(frozen=True)
class Correction:
    """One verdict of the owner, as twin.app reads it from bot.db."""

    correction_id: int
    chat_id: int  # 0 for a /persona sample
    verdict: str  # "sent", "edited", "skipped", "liked" or "disliked"
    prompt: list[ChatMessage]  # as served: the system turn with the chat's memory block, turns
    draft: str  # what the twin wrote
    sent: str | None  # what the owner sent instead (an edit)

    @property
    def needs_sample(self) -> bool:
        """Whether its pair's other side is a fresh sample of the twin."""
        return self.verdict in DRAFT_CHOSEN + DRAFT_REJECTED


@dataclass(frozen=True)
class Pair:
    prompt: list[ChatMessage]
    chosen: str
    rejected: str
    source: Source
    correction_id: int | None = None  # the correction it comes from


def same_reply(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def history_pairs(
    prompts: Sequence[tuple[list[ChatMessage], str]], samples: Sequence[str]
) -> list[Pair]:
    """The owner's real reply over the twin's sample, for each prompt where they differ."""
    return [
        Pair(prompt, real, sample, "history")
        for (prompt, real), sample in zip(prompts, samples, strict=True)
        if real.strip() and sample.strip() and not same_reply(real, sample)
    ]


def correction_pairs(
    corrections: Sequence[Correction],
    samples: dict[int, str],
    scrub: Callable[[str], str],
    weight: int,
) -> list[Pair]:
    """Each correction's pair (see the module's table), masked, repeated `weight` times.
    `samples`: a fresh reply of the twin for each correction that needs one, by id."""
    pairs = []
    for c in corrections:
        draft = scrub(c.draft)
        if c.verdict == "edited" and c.sent is not None:
            chosen, rejected = scrub(c.sent), draft
        elif c.verdict in DRAFT_CHOSEN and c.correction_id in samples:
            chosen, rejected = draft, samples[c.correction_id]
        elif c.verdict in DRAFT_REJECTED and c.correction_id in samples:
            chosen, rejected = samples[c.correction_id], draft
        else:
            continue
        if not chosen.strip() or not rejected.strip() or same_reply(chosen, rejected):
            continue
        prompt: list[ChatMessage] = [{**m, "content": scrub(m["content"])} for m in c.prompt]
        pairs += [Pair(prompt, chosen, rejected, "correction", c.correction_id)] * weight
    return pairs


def encode_pair(
    tokenizer: Any, pair: Pair, max_tokens: int, reply_tokens: int
) -> dict[str, list[int]] | None:
    """The pair as DPO reads it: prompt ids (the serving prompt, its oldest turns dropped to
    leave `reply_tokens` of room) and each reply's ids (its text and end-of-turn marker,
    rendered with the model's chat template exactly as training renders a reply). None when
    the two replies would not share the prompt's tokens (a template that merges across the
    boundary)."""
    try:
        prompt = fit_prompt(tokenizer, pair.prompt, max(max_tokens - reply_tokens, 16))
    except PromptTooLong:
        return None
    prompt_ids = encode_prompt(tokenizer, prompt)
    replies = []
    for text in (pair.chosen, pair.rejected):
        context: list[ChatMessage] = [
            {**m, "weight": 0} if m["role"] == "assistant" else m for m in prompt
        ]
        example = encode_for_training(
            tokenizer, [*context, {"role": "assistant", "content": text}], 1 << 30
        )
        if example.input_ids[: len(prompt_ids)] != prompt_ids:
            return None
        reply = [
            token
            for token, label in zip(
                example.input_ids[len(prompt_ids) :],
                example.labels[len(prompt_ids) :],
                strict=True,
            )
            if label != IGNORE_INDEX
        ]
        replies.append(reply[: max(max_tokens - len(prompt_ids), 1)])
    if not all(replies):
        return None
    return {"prompt_ids": prompt_ids, "chosen_ids": replies[0], "rejected_ids": replies[1]}


def corrections_key(corrections: Sequence[Correction]) -> str:
    """The corrections, hashed (part of the training key): a new one makes a retrain on the
    same history worth running."""
    rows = [(c.correction_id, c.verdict, c.draft, c.sent) for c in corrections]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()
