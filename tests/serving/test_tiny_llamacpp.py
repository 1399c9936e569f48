"""The llama.cpp engine against the transformers engine on the very same weights: the sharper
tiny random Llama, written as an F32 GGUF (tests/serving/tiny_gguf.py).

llama.cpp as the engine serves keeps its KV cache in float16 (and on the CPU its flash
attention rounds q, k and v to float16 too): logits then differ from transformers' float32 by
~1e-3 of their size, enough to flip a greedy choice between two tokens closer than that (the
first conversation's second token is such a near tie). So the exact comparisons (the logits
to float32 rounding, greedy replies token for token) run an engine whose cache is float32
without flash attention, and the engine as served is held to float16 rounding."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from serving.llamacpp import _Item
from tests.helpers import sharp_tiny
from tests.serving.tiny_gguf import write_tiny_gguf
from twin.core.chat_format import encode_prompt
from twin.core.config import Config
from twin.core.conversation import ChatMessage, with_block, with_system_prompt, without_block
from twin.core.loading import load_config

SYSTEM = "You are Mira. Reply as Mira would."
MESSAGES = [
    "hey! are we still on for dinner tomorrow?",
    "can you send me the address again?",
    "what colour is your new bike?",
    "ok",
]


def conversations() -> list[list[ChatMessage]]:
    return [with_system_prompt(SYSTEM, [{"role": "user", "content": m}]) for m in MESSAGES]


def tiny_config(folder: Path, engine: str, base: Path, gguf: Path) -> Config:
    path = folder / f"{engine}.toml"
    path.write_text(
        f'[paths]\ndata_dir = "data"\n[model]\nbase = "{base}"\ncpu_dtype = "fp32"\n'
        # Guidance off: these prompts have no memory block, and each engine guides its own way.
        "[generation]\ntemperature = 0.0\nmax_new_tokens = 12\nmemory_guidance = 0\n"
        f'[serving]\nengine = "{engine}"\nthreads = 2\ngguf = "{gguf}"\n'
    )
    return load_config(path)


@dataclass
class Engines:
    served: Any  # LlamaCppEngine as the bot runs it (float16 KV cache)
    exact: Any  # LlamaCppEngine with a float32 KV cache and no flash attention
    transformers: Any  # TransformersEngine
    config: Config  # the llama.cpp engines' (greedy, 12 new tokens)


@pytest.fixture(scope="module")
def engines(
    tmp_path_factory: pytest.TempPathFactory, tiny_base: Path, model_cache: Path
) -> Iterator[Engines]:
    """Two llama.cpp engines and a transformers engine, all serving the sharper tiny model."""
    import llama_cpp

    from serving.llamacpp import LlamaCppEngine
    from serving.transformers import TransformersEngine
    from trainer.embedded import EMBEDDED, gguf_file

    folder = tmp_path_factory.mktemp("tiny-gguf")
    base = sharp_tiny(tiny_base, folder / "sharp-tiny")
    tokenizer_gguf = gguf_file(EMBEDDED["smollm2-135m"], model_cache)
    gguf = write_tiny_gguf(base, tokenizer_gguf, folder / "sharp-tiny.f32.gguf")
    config = tiny_config(folder, "llama.cpp", base, gguf)
    default = llama_cpp.llama_context_default_params

    def float32_cache() -> Any:
        params = default()
        params.type_k = params.type_v = llama_cpp.GGML_TYPE_F32
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        return params

    served = LlamaCppEngine(config)
    # The context is made here, once: a new one only for prompts longer than its room
    # ([bot] context_tokens, 1024), which these never are.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(llama_cpp, "llama_context_default_params", float32_cache)
        exact = LlamaCppEngine(config)
    try:
        transformers = TransformersEngine.load(tiny_config(folder, "transformers", base, gguf))
        yield Engines(served, exact, transformers, config)
    finally:
        served.close()
        exact.close()


def first_logits(llama: Any, hf: Any) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The logits after each conversation's prompt: transformers' (one prompt at a time, no
    padding) and the llama.cpp engine's (all prompts in one prefill)."""
    prompts = [encode_prompt(hf.tokenizer, c) for c in conversations()]
    with torch.inference_mode():
        ours = [hf.model(torch.tensor([p])).logits[0, -1].numpy() for p in prompts]
    _, theirs = llama._llama.prefill(prompts)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape == (len(hf.tokenizer),)
    return ours, theirs


def max_difference(ours: list[np.ndarray], theirs: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))


def test_gguf_is_the_checkpoint(engines: Engines) -> None:
    """The GGUF computes the checkpoint's logits to float32 rounding: a wrong permutation,
    norm epsilon or RoPE base would be far above it."""
    ours, theirs = first_logits(engines.exact, engines.transformers)
    difference = max_difference(ours, theirs)
    print(f"float32 KV cache: max |logit difference| {difference:.1e}")
    assert difference < 1e-4
    # The sharper model's prompts lead somewhere different (the check means something).
    assert len({int(a.argmax()) for a in ours}) > 1


def test_served_engine_agrees_to_float16_rounding(engines: Engines) -> None:
    ours, theirs = first_logits(engines.served, engines.transformers)
    scale = max(float(np.abs(a).max()) for a in ours)
    difference = max_difference(ours, theirs)
    print(f"served: max |logit difference| {difference:.1e} (largest |logit| {scale:.1f})")
    assert difference < 5e-3 * scale
    assert [int(a.argmax()) for a in ours] == [int(b.argmax()) for b in theirs]


def test_greedy_replies_agree_token_for_token(engines: Engines) -> None:
    """Greedy decoding with the repetition penalty (1.1), four conversations batched: the
    same tokens from both engines, and the same replies as the bot reads them."""
    from trainer.generation import reply_tokens, stop_tokens

    llama, hf = engines.exact, engines.transformers
    generation = engines.config.generation
    chats = conversations()
    stops = set(stop_tokens(hf.tokenizer))
    theirs = [_until(r, stops) for r in reply_tokens(hf.model, hf.tokenizer, chats, generation)]
    # Each prompt without a contrast prompt (no memory guidance), as `generate` groups them.
    group = [_Item(encode_prompt(hf.tokenizer, c), None, None, []) for c in chats]
    ours = llama._generate_group(group, generation, None)
    assert ours == theirs
    assert len({tuple(r) for r in ours}) == len(chats)  # replies that vary with the prompt
    assert llama.generate(chats, generation) == hf.generate(chats, generation)


def _until(reply: list[int], stops: set[int]) -> list[int]:
    """transformers' reply up to its end-of-turn (it pads a batch's ended rows after it)."""
    end = next((i for i, token in enumerate(reply) if token in stops), len(reply))
    return reply[:end]


BLOCK = 'What you said before in this chat:\n- "new bike!! mint green, i\'m obsessed"'


def test_guided_greedy_replies_agree_token_for_token(engines: Engines) -> None:
    """Memory-guided decoding: llama.cpp's second sequence per guided prompt and the
    transformers engine's contrast row give the same guided greedy replies, batched with a
    reply that has no block (decoded plainly in the same call)."""
    from trainer.generation import contrast_prompts, reply_tokens

    llama, hf = engines.exact, engines.transformers
    generation = engines.config.generation.model_copy(update={"memory_guidance": 2.0})
    chats = [
        with_block(with_system_prompt(SYSTEM, [{"role": "user", "content": m}]), BLOCK)
        if i != 1
        else with_system_prompt(SYSTEM, [{"role": "user", "content": m}])
        for i, m in enumerate(MESSAGES)
    ]
    contrasts = contrast_prompts(hf.tokenizer, chats, generation)
    assert [c is None for c in contrasts] == [False, True, False, False]
    theirs = reply_tokens(hf.model, hf.tokenizer, chats, generation)
    group = [
        _Item(encode_prompt(hf.tokenizer, c), x, None, [])
        for c, x in zip(chats, contrasts, strict=True)
    ]
    assert llama._generate_group(group, generation, None) == theirs
    assert llama.generate(chats, generation) == hf.generate(chats, generation)
    # Guidance is at work in both: the guided replies are not the plain ones.
    plain = reply_tokens(hf.model, hf.tokenizer, chats, engines.config.generation)
    assert [_until(p, set()) != t for p, t in zip(plain, theirs, strict=True)] != [False] * 4


def chat_turns(*turns: str) -> list[ChatMessage]:
    """A conversation going on: the persona prompt, then user and assistant turns in turn."""
    roles = ("user", "assistant")
    messages = [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]
    return with_system_prompt(SYSTEM, messages)  # type: ignore[arg-type]


def test_a_continued_chat_reads_only_its_new_tokens(engines: Engines) -> None:
    """The bot's normal case: a chat's next message, after other chats came in between (more
    than the engine has sequences), guided, with the block searched anew for the message.
    The chat's kept states are restored: both branches go on from the contrast branch's
    (the chat as it was, with the reply, and no block in it), and read only what came after
    it: the new message, and the main branch its block."""
    from serving.llama_context import SEQUENCES, shared_start

    llama = engines.served
    llama.forget()
    generation = engines.config.generation.model_copy(update={"memory_guidance": 2.0})
    first = with_block(chat_turns("what colour is your new bike?"), BLOCK)
    (reply,) = llama.generate([first], generation, chats=["ann"])
    kept_main = llama.states.get("chat:ann").tokens
    kept_contrast = llama.states.get("contrast:ann").tokens
    for i in range(SEQUENCES + 1):  # other chats take every sequence meanwhile
        llama.generate([chat_turns(f"hi, it's friend {i}")], generation, chats=[f"friend {i}"])
    second = with_block(
        chat_turns("what colour is your new bike?", reply, "and the old one?"),
        'What you said before in this chat:\n- "the old one was red"',
    )
    tokenizer = engines.transformers.tokenizer
    prompt = encode_prompt(tokenizer, second)
    contrast = encode_prompt(tokenizer, without_block(second))
    before = llama._llama.read
    llama.generate([second], generation, chats=["ann"])
    read = llama._llama.read - before
    first_contrast = encode_prompt(tokenizer, without_block(first))
    # The contrast branch's kept state is its first prompt and the reply, all of which both
    # branches' new prompts start with.
    assert kept_contrast[: len(first_contrast)] == tuple(first_contrast)
    assert shared_start(kept_contrast, prompt) == shared_start(kept_contrast, contrast)
    # Up to the reply at least (the reply's tokens read back from its text may differ: a
    # random model's tokens are no tokenizer's own spelling of them).
    assert shared_start(kept_contrast, contrast) >= len(first_contrast)
    assert shared_start(kept_main, prompt) < shared_start(kept_contrast, prompt)
    start = shared_start(kept_contrast, prompt)
    assert read == (len(prompt) - start) + (len(contrast) - start)
    block = len(prompt) - len(contrast)  # what the main branch reads more: its new block
    assert read == 2 * (len(contrast) - start) + block
    assert read < len(prompt)  # both branches together: less than the one prompt cold


def test_a_new_chat_starts_from_the_persona_prompt_kept_once(engines: Engines) -> None:
    """A chat the engine holds nothing of reads its prompt after the persona prompt only:
    that part's state is kept once, for every chat (here with no sequence holding it)."""
    from serving.llama_context import shared_start

    llama = engines.served
    llama.forget()
    generation = engines.config.generation
    tokenizer = engines.transformers.tokenizer
    llama.generate([chat_turns("hey there")], generation, chats=["a"])
    llama._llama.forget()  # every sequence emptied; the saved states stay
    prompt = encode_prompt(tokenizer, chat_turns("a brand new chat"))
    persona = shared_start(encode_prompt(tokenizer, chat_turns("")), prompt)
    assert persona > len(encode_prompt(tokenizer, [{"role": "system", "content": SYSTEM}])) - 3
    before = llama._llama.read
    llama.generate([chat_turns("a brand new chat")], generation, chats=["new"])
    assert llama._llama.read - before == len(prompt) - persona


def test_a_restored_state_gives_the_same_greedy_reply_as_a_cold_read(engines: Engines) -> None:
    llama = engines.exact  # float32 cache: the same arithmetic either way
    llama.forget()
    generation = engines.config.generation.model_copy(update={"memory_guidance": 2.0})
    first = with_block(chat_turns("what colour is your new bike?"), BLOCK)
    (reply,) = llama.generate([first], generation, chats=["ann"])
    for i in range(9):
        llama.generate([chat_turns(f"hi, it's friend {i}")], generation, chats=[f"friend {i}"])
    second = with_block(chat_turns("what colour is your new bike?", reply, "really?"), BLOCK)
    before = llama._llama.read
    restored = llama.generate([second], generation, chats=["ann"])
    assert llama._llama.read - before < len(encode_prompt(engines.transformers.tokenizer, second))
    llama.forget()
    assert llama.generate([second], generation) == restored


def test_states_stay_within_their_bound_least_recently_used_out_first(engines: Engines) -> None:
    llama = engines.served
    llama.forget()
    generation = engines.config.generation
    llama.generate([chat_turns("first chat")], generation, chats=["c0"])
    one = len(llama.states.get("chat:c0").data)
    bound, llama.states.bound_bytes = llama.states.bound_bytes, int(3.5 * one)
    try:
        for i in range(1, 6):
            llama.generate([chat_turns("first chat")], generation, chats=[f"c{i}"])
            assert llama.states.nbytes <= llama.states.bound_bytes
        kept = [f"c{i}" for i in range(6) if f"chat:c{i}" in llama.states]
        # The persona prompt's state (smaller, used by every chat) and the newest three.
        assert kept == ["c3", "c4", "c5"] and len(llama.states) == 4
        assert llama.states.evicted == 3
    finally:
        llama.states.bound_bytes = bound
