"""Memory-guided decoding (trainer.guidance, trainer.generation): the distribution it draws
from is its formula, guidance 0 and conversations without a memory block decode as before."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import sharp_tiny
from trainer.generation import generate_replies, reply_tokens, sampling_scores, stop_tokens
from trainer.guidance import PLAUSIBLE, guided_scores, jensen_shannon
from twin.core.chat_format import encode_prompt
from twin.core.config import GenerationConfig, config_from_dict
from twin.core.conversation import ChatMessage, with_block, without_block

SYSTEM = "You are Mira."
PENALTY = 2.0
BLOCK = 'What you said before in this chat:\n- "new bike!! mint green, i\'m obsessed"'


def conversation(text: str, *, block: bool) -> list[ChatMessage]:
    plain: list[ChatMessage] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text},
    ]
    return with_block(plain, BLOCK if block else "")


CONVERSATIONS = [
    conversation("what colour is your bike again?", block=True),
    conversation("hey, how was the weekend?", block=False),
    conversation("did you get a new bike or what", block=True),
]


@pytest.fixture(scope="module")
def tiny(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny random Llama with larger weights (tests.helpers.sharp_tiny): its next-token
    distributions are peaked and follow the prompt, so guidance has something to move."""
    from trainer.model import load_base

    folder = sharp_tiny(tiny_base, tmp_path_factory.mktemp("sharp-tiny"))
    return load_base(config_from_dict({"model": {"base": str(folder), "cpu_dtype": "fp32"}}))


def greedy(guidance: float, max_new_tokens: int = 10) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        # Strong, so that the penalty's part in the arithmetic shows.
        repetition_penalty=PENALTY,
        memory_guidance=guidance,
    )


def test_jensen_shannon_is_in_bits() -> None:
    p = torch.log(torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.2, 0.3, 0.4, 0.1]]))
    q = torch.log(torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.2, 0.3, 0.4, 0.1]]))
    assert jensen_shannon(p, q).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    a, b = torch.tensor([0.7, 0.2, 0.1]), torch.tensor([0.1, 0.3, 0.6])
    m = (a + b) / 2
    expected = 0.5 * (a * (a / m).log()).sum() + 0.5 * (b * (b / m).log()).sum()
    measured = jensen_shannon(a.log()[None], b.log()[None])[0]
    assert float(measured) == pytest.approx(float(expected) / math.log(2), rel=1e-5)


def test_guided_distribution_is_its_formula() -> None:
    """p_guided = p^(1+alpha) / q^alpha, renormalised, alpha = scale * JSD(p, q), for the
    tokens at least PLAUSIBLE as likely as p's top token; the others keep p's odds."""
    torch.manual_seed(1)
    with_memory, without = torch.randn(3, 50) * 3, torch.randn(3, 50) * 3
    scores, alpha = guided_scores(with_memory, without, 2.0)
    p, q = torch.softmax(with_memory.double(), -1), torch.softmax(without.double(), -1)
    m = (p + q) / 2
    jsd = (0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)) / math.log(2)
    assert alpha.double().tolist() == pytest.approx((2.0 * jsd).tolist(), rel=1e-4)
    a = alpha.double()[:, None]
    plausible = p >= PLAUSIBLE * p.max(-1, keepdim=True).values
    formula = torch.where(plausible, p ** (1 + a) / q**a, p)
    formula = formula / formula.sum(-1, keepdim=True)
    assert torch.allclose(torch.softmax(scores.double(), -1), formula, atol=1e-5)
    assert (~plausible).any() and plausible.sum(-1).min() >= 1  # both kinds of token occur
    # Where the two prompts agree there is nothing to guide: the logits come back as they were.
    same, zero = guided_scores(with_memory, with_memory, 2.0)
    assert torch.equal(same, with_memory) and zero.abs().max() < 1e-6


def reference_reply(
    model: Any,
    tokenizer: Any,
    chat: list[ChatMessage],
    scale: float,
    generation: GenerationConfig,
    stops: set[int],
) -> list[int]:
    """Guided greedy decoding written out: no cache, no batch, float64, the formula by hand."""
    with_prompt = encode_prompt(tokenizer, chat)
    plain = without_block(chat)
    without_prompt = encode_prompt(tokenizer, plain) if plain is not chat else None
    reply: list[int] = []
    with torch.inference_mode():
        for _ in range(generation.max_new_tokens):
            z = model(torch.tensor([with_prompt + reply])).logits[0, -1].double()
            if without_prompt is not None and scale > 0:
                zq = model(torch.tensor([without_prompt + reply])).logits[0, -1].double()
                p, q = torch.softmax(z, -1), torch.softmax(zq, -1)
                m = (p + q) / 2
                jsd = 0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum()
                alpha = scale * float(jsd) / math.log(2)
                push = torch.where(p >= PLAUSIBLE * p.max(), p.log() - q.log(), 0.0)
                z = z + alpha * push
            for token in set(with_prompt + reply):
                z[token] = z[token] * PENALTY if z[token] < 0 else z[token] / PENALTY
            token = int(z.argmax())
            if token in stops:
                break
            reply.append(token)
    return reply


def test_guided_greedy_replies_follow_the_formula_token_by_token(
    tiny: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batched, with key-value caches reused and rows leaving the batch as they end, the
    engine's guided greedy replies are the formula's, reply by reply."""
    import trainer.generation as generation_module

    model, tokenizer = tiny.model, tiny.tokenizer
    generation = greedy(2.0, max_new_tokens=10)
    stops = set(generation_module.stop_tokens(tokenizer))
    first = reference_reply(model, tokenizer, CONVERSATIONS[0], 2.0, generation, stops)
    assert len(first) == 10, first
    # The random model never ends a turn: make a token the first reply writes after a few
    # others an end, so that row (and any other reaching it) leaves the batch early.
    end = next(i for i in range(2, 10) if first[i] not in first[:i])
    stops.add(first[end])
    monkeypatch.setattr(generation_module, "stop_tokens", lambda _: sorted(stops))
    expected = [reference_reply(model, tokenizer, c, 2.0, generation, stops) for c in CONVERSATIONS]
    assert len(expected[0]) == end
    assert reply_tokens(model, tokenizer, CONVERSATIONS, generation) == expected
    # The contrast is at work: without it the replies with a block come out otherwise.
    unguided = reply_tokens(model, tokenizer, CONVERSATIONS, greedy(0.0, 10))
    assert unguided[0][:end] != expected[0] or unguided[2][: len(expected[2])] != expected[2]


def forward_tokens(model: Any) -> list[int]:
    """Counts the tokens each forward pass of `model` reads (rows x length)."""
    counted: list[int] = []
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner.register_forward_pre_hook(
        lambda _m, args, kwargs: counted.append(int(kwargs["input_ids"].numel())),
        with_kwargs=True,
    )
    return counted


def test_guidance_zero_and_no_block_decode_as_before(tiny: Any) -> None:
    """memory_guidance 0 gives transformers' own generate, token for token; a reply without
    a memory block reads exactly the tokens it read without guidance."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny.model, tiny.tokenizer
    generation = greedy(0.0, max_new_tokens=8)
    prompts = [encode_prompt(tokenizer, c) for c in CONVERSATIONS]
    batch = tokenizer.pad(
        {"input_ids": prompts}, padding=True, padding_side="left", return_tensors="pt"
    )
    output = model.generate(
        **batch,
        max_new_tokens=8,
        do_sample=False,
        repetition_penalty=PENALTY,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=stop_tokens(tokenizer),
    )
    today = output[:, batch["input_ids"].shape[1] :].tolist()
    assert reply_tokens(model, tokenizer, CONVERSATIONS, generation) == today

    counting = AutoModelForCausalLM.from_pretrained(tiny.checkpoint)
    counted = forward_tokens(counting)
    plain = [CONVERSATIONS[1]]
    generate_replies(counting, tokenizer, plain, greedy(0.0))
    off = sum(counted)
    counted.clear()
    generate_replies(counting, tokenizer, plain, greedy(2.0))
    assert sum(counted) == off
    counted.clear()
    generate_replies(counting, tokenizer, [CONVERSATIONS[0]], greedy(2.0))
    assert sum(counted) > off  # with a block, the contrast row is read too


def test_sampling_scores_are_transformers_processors() -> None:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(3)
    scores = torch.randn(2, 40) * 4
    ids = torch.tensor([[1, 5, 5, 9], [2, 3, 30, 39]])
    seen = torch.zeros(2, 40, dtype=torch.bool)
    seen.scatter_(1, ids, True)
    generation = GenerationConfig(temperature=0.7, top_p=0.8, repetition_penalty=1.3)
    ours = sampling_scores(scores.clone(), seen, generation, 10)
    theirs = LogitsProcessorList(
        [
            RepetitionPenaltyLogitsProcessor(1.3),
            TemperatureLogitsWarper(0.7),
            TopKLogitsWarper(10),
            TopPLogitsWarper(0.8),
        ]
    )(ids, scores.clone())
    assert torch.equal(ours, theirs)
