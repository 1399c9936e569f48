"""The shared conversation format: loss masking token by token, and training == serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from transformers import AutoTokenizer

from twin.core.chat_format import (
    IGNORE_INDEX,
    PromptTooLong,
    encode_for_training,
    encode_prompt,
    fit_prompt,
    prompt_length,
)
from twin.core.conversation import ChatMessage, with_block

CONVERSATION: list[ChatMessage] = [
    {
        "role": "system",
        "content": "You are Mira. Reply to this Telegram chat exactly as Mira would.",
    },
    {"role": "user", "content": "are you coming tonight?"},
    {"role": "assistant", "content": "ngl not sure\nmaybe :)", "weight": 0},
    {"role": "user", "content": "Please come, it's Tom's birthday!"},
    {"role": "assistant", "content": "ok ok\ni'll be there"},
    {"role": "user", "content": "Great."},
    {"role": "assistant", "content": "lol see u"},
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_tokenizer_dir: Path) -> Any:
    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


def _segments(messages: list[ChatMessage]) -> list[tuple[str, bool]]:
    """SmolLM2's ChatML written out by hand: (text, is it learned) pieces."""
    pieces: list[tuple[str, bool]] = []
    for m in messages:
        learned = m["role"] == "assistant" and m.get("weight", 1) != 0
        pieces.append((f"<|im_start|>{m['role']}\n", False))
        pieces.append((f"{m['content']}<|im_end|>\n", learned))
    return pieces


def test_labels_are_masked_exactly_on_non_reply_tokens(tokenizer: Any) -> None:
    example = encode_for_training(tokenizer, CONVERSATION, max_tokens=1024)
    expected_ids: list[int] = []
    expected_labels: list[int] = []
    for text, learned in _segments(CONVERSATION):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        expected_ids += ids
        expected_labels += ids if learned else [IGNORE_INDEX] * len(ids)
    assert example.input_ids == expected_ids
    # Token by token: every label is either the token itself (owner's trained reply, its end
    # marker and newline) or ignored (system, user, the weight-0 context reply, role headers).
    assert example.labels == expected_labels
    learned = tokenizer.decode([t for t in example.labels if t != IGNORE_INDEX])
    assert learned == "ok ok\ni'll be there<|im_end|>\nlol see u<|im_end|>\n"


def test_serving_prompt_is_the_training_text_up_to_the_reply(tokenizer: Any) -> None:
    example = encode_for_training(tokenizer, CONVERSATION, max_tokens=1024)
    for i, message in enumerate(CONVERSATION):
        if message["role"] != "assistant":
            continue
        prompt = encode_prompt(tokenizer, CONVERSATION[:i])
        assert example.input_ids[: len(prompt)] == prompt
        # The first label of this reply sits right after the prompt.
        if message.get("weight", 1):
            assert example.labels[len(prompt)] == example.input_ids[len(prompt)]
        assert example.labels[len(prompt) - 1] == IGNORE_INDEX


def test_a_chat_s_next_prompt_starts_with_its_previous_one_up_to_the_newest_turn(
    tokenizer: Any,
) -> None:
    # The layout made for reuse: the block is searched anew for every message and sits just
    # before it, so everything before that turn (persona prompt, the chat so far) is, token
    # for token, the start of the previous prompt too: an engine that kept what it read reads
    # only the newest turn with its block, and what came after its last reply.
    first = with_block(CONVERSATION[:4], 'What you said before:\n- "tom loves cake"')
    second = with_block(CONVERSATION[:6], 'What you said before:\n- "see u at 8"')
    a, b = encode_prompt(tokenizer, first), encode_prompt(tokenizer, second)
    before_newest = encode_prompt(tokenizer, CONVERSATION[:3])[:-3]  # without the reply's cue
    shared = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    assert a[: len(before_newest)] == b[: len(before_newest)] == before_newest
    assert tokenizer.decode(a[shared:]).startswith("What you said before:")
    # The block is rendered at the head of the newest turn, the message right after it.
    assert tokenizer.decode(a).endswith(
        '<|im_start|>user\nWhat you said before:\n- "tom loves cake"\n\n'
        "Please come, it's Tom's birthday!<|im_end|>\n<|im_start|>assistant\n"
    )
    # Training renders it identically: the example's prompt is the served prompt.
    trained = encode_for_training(tokenizer, [*first, CONVERSATION[4]], max_tokens=1024)
    assert trained.input_ids[: len(a)] == a


def test_without_system_turn_the_template_default_would_leak_in(tokenizer: Any) -> None:
    # Why twin always passes the persona prompt: SmolLM2's template injects its own otherwise.
    ids = encode_prompt(tokenizer, [{"role": "user", "content": "hi"}])
    assert "SmolLM" in tokenizer.decode(ids)
    ids = encode_prompt(tokenizer, CONVERSATION[:2])
    assert "SmolLM" not in tokenizer.decode(ids)


def test_long_examples_lose_oldest_turns_but_keep_system_and_start_with_user(
    tokenizer: Any,
) -> None:
    example = encode_for_training(tokenizer, CONVERSATION, max_tokens=45)
    text = tokenizer.decode(example.input_ids)
    assert text.startswith("<|im_start|>system\nYou are Mira.")
    assert "are you coming tonight" not in text
    assert (
        "<|im_start|>system\nYou are Mira. Reply to this Telegram chat exactly as Mira would."
        "<|im_end|>\n<|im_start|>user\n" in text
    )
    assert len(example.input_ids) <= 45
    assert any(label != IGNORE_INDEX for label in example.labels)


def test_fit_prompt_refuses_a_system_prompt_over_budget_at_once(tokenizer: Any) -> None:
    """The old cut (`content[len(content)//4:]`) spun forever on a 2-3 character remainder;
    a system prompt that leaves no room must end in one clear error, whatever its length."""
    for length in (1, 2, 3, 4000):
        messages: list[ChatMessage] = [
            {"role": "system", "content": "x " * length},
            {"role": "user", "content": "hi"},
        ]
        budget = prompt_length(tokenizer, messages[:1]) - 1
        with pytest.raises(PromptTooLong, match=f"leaves no room in {budget} prompt tokens"):
            fit_prompt(tokenizer, messages, budget)


def test_fit_prompt_drops_old_turns_then_keeps_the_end_of_a_long_message(tokenizer: Any) -> None:
    long = "start " + "word " * 2000 + "the end?"
    messages = [*CONVERSATION[:-1], {"role": "user", "content": long}]
    fitted = fit_prompt(tokenizer, messages, 200)
    assert prompt_length(tokenizer, fitted) <= 200
    assert fitted[0] == CONVERSATION[0]  # the persona prompt always stays
    assert [m["role"] for m in fitted] == ["system", "user"]  # older turns went first
    assert fitted[-1]["content"].endswith("the end?") and len(fitted[-1]["content"]) < len(long)
    # A prompt inside its budget is served unchanged.
    assert fit_prompt(tokenizer, CONVERSATION[:-1], 10_000) == CONVERSATION[:-1]
