"""The llama.cpp engine: the base GGUF on the CPU, each adapter converted to a GGUF LoRA.

The embedded bases ship as GGUF files, and training used those very weights (dequantized):
llama.cpp runs the GGUF's 4-bit weights directly, a quarter of fp32's memory traffic per
generated token. On 2 cores it generated tokens 1.9x (on a quiet machine 3.8x) as fast as
transformers fp32, but read prompts more slowly (no AMX or repacked kernels for Q4_1 there;
see bench/llamacpp.py): it pays for long replies and for a chat going on, whose earlier turns
it keeps, not for a first short reply to a long prompt. What makes it serve what was trained:

- the prompt: rendered by twin's chat format with the training base's own HF tokenizer, and
  given to llama.cpp as token ids (llama.cpp's tokenizer and chat template are never used);
- the reply: sampled here from llama.cpp's logits by transformers' own logits processors,
  as its `generate` applies them (repetition penalty over the prompt and the reply, then
  temperature, top-k, top-p; greedy at temperature 0), stopped on the end-of-turn tokens
  twin's generation stops on, decoded by the HF tokenizer;
- the adapter: checked (readable, finite, trained on this base, every LoRA matrix the right
  shape for the GGUF's tensors), converted once to `adapter.gguf` beside it
  (trainer.gguf_lora), then loaded onto the model between two batches; a refused one
  changes nothing.

Conversations of one `generate` call are decoded together, one llama.cpp sequence each (up
to SEQUENCES at a time). What is read is kept, so that a reply reads only what is new:
- each sequence keeps its tokens in the KV cache after the reply: the next prompt that
  starts the same way evaluates only the rest;
- each chat's state after its reply (and its contrast branch's, when guided) is saved in RAM
  (serving.chat_states, within `[serving] chat_states_mb`, least recently used out first)
  and restored for the chat's next message, however many chats came in between: the prompt
  layout (twin.core.conversation.with_block) makes that prompt start as the previous one did
  up to the newest turn;
- the persona prompt's state is saved once and starts every chat the engine has no state of;
- a swapped adapter drops them all (they were computed with the old one).

The library itself is driven by serving.llama_context (llama-cpp-python's ctypes bindings).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from serving.chat_states import ChatStates, SavedState
from serving.checks import read_adapter
from serving.engine import AdapterRefused, EngineUnavailable
from serving.llama_context import SEQUENCES, LlamaContext, requantized, shared_start
from trainer.embedded import EMBEDDED, gguf_file
from trainer.generation import contrast_prompts, sampling_scores, sampling_top_k, stop_tokens
from trainer.gguf_lora import (
    GGUF_ADAPTER,
    AdapterUnfit,
    BaseGGUF,
    architecture_of,
    gguf_lora_tensors,
    read_base_gguf,
    save_gguf_lora,
)
from trainer.guidance import guided_scores
from trainer.model import base_checkpoint, load_tokenizer
from twin.core.chat_format import encode_prompt
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage
from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir

log = logging.getLogger(__name__)


class LlamaCppEngine:
    """The Engine of `[serving] engine = "llama.cpp"`. Loads the base GGUF (no adapter yet)."""

    def __init__(self, config: Config) -> None:
        self.checkpoint = base_checkpoint(config)
        self.tokenizer: Any = load_tokenizer(self.checkpoint)
        self.version: str | None = None
        self.gguf = base_gguf_path(config)
        self.base = read_base_gguf(self.gguf)
        architecture_of(self.base)  # one twin can convert adapters for, else say so now
        check_same_model(self.base, self.checkpoint)
        self.threads = config.serving.threads or os.cpu_count() or 1
        self._stop_ids = frozenset(stop_tokens(self.tokenizer))
        self._top_k = _transformers_top_k(self.checkpoint)
        # Room for one conversation: the bot's context (prompt and reply), or a training
        # example with a reply after it (what the eval answers), whichever is longer.
        wanted = max(
            config.bot.context_tokens,
            config.train.max_seq_tokens + config.generation.max_new_tokens,
        )
        self.served_gguf = served_gguf(config, self.gguf, self.threads)
        self._llama = LlamaContext(
            self.served_gguf, self.threads, min(wanted, self.base.context_length)
        )
        self.states = ChatStates(config.serving.chat_states_mb * 2**20)
        self._persona_probes: dict[str, list[int]] = {}

    def generate(
        self,
        conversations: list[list[ChatMessage]],
        generation: GenerationConfig,
        *,
        stop: threading.Event | None = None,
        chats: list[str | None] | None = None,
    ) -> list[str]:
        prompts = [encode_prompt(self.tokenizer, c) for c in conversations]
        contrasts = contrast_prompts(self.tokenizer, conversations, generation)
        keys = chats if chats is not None else [None] * len(conversations)
        items = [
            _Item(prompt, contrast, key, self._persona_prefix(conversation, prompt))
            for prompt, contrast, key, conversation in zip(
                prompts, contrasts, keys, conversations, strict=True
            )
        ]
        replies: list[list[int]] = []
        for group in _groups(items):
            if stop is not None and stop.is_set():
                replies += [[] for _ in group]
                continue
            self._save_persona_prefixes(group)
            replies += self._generate_group(group, generation, stop)
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in replies]

    def forget(self) -> None:
        """Nothing read is kept any more: the next prompts are read from their first token."""
        self._llama.forget()
        self.states.clear()

    def swap(self, folder: Path) -> None:
        version = folder.name
        if version == self.version:
            return
        adapter_config, state = read_adapter(folder, self.checkpoint)
        try:
            tensors = gguf_lora_tensors(adapter_config, state, self.base)
        except AdapterUnfit as err:
            raise AdapterRefused(
                f"adapter {version} does not fit {self.gguf.name}: {err}"
            ) from None
        converted = folder / GGUF_ADAPTER
        alpha = float(adapter_config["lora_alpha"])
        # Converted once: a conversion newer than the weights is reused; one llama.cpp
        # cannot load (a damaged file) is made again before the adapter is refused.
        reused = _newer(converted, folder / "adapter_model.safetensors")
        try:
            if not reused:
                save_gguf_lora(tensors, alpha, self.base.architecture, converted)
            try:
                self._llama.use_adapter(converted)
            except RuntimeError:
                if not reused:
                    raise
                save_gguf_lora(tensors, alpha, self.base.architecture, converted)
                self._llama.use_adapter(converted)
            self.states.clear()  # computed with the adapter before
        except OSError as err:
            # The conversion could not be written (a full disk, a read-only folder): the adapter
            # may be fine, so this is no refusal; the bot tries it again later.
            raise EngineUnavailable(
                f"adapter {version}: cannot write its llama.cpp conversion ({err})"
            ) from None
        except RuntimeError as err:
            raise AdapterRefused(f"adapter {version}: llama.cpp cannot load it: {err}") from None
        self.version = version
        log.info("llama.cpp serves adapter %s (%s)", version, converted)

    def close(self) -> None:
        self._llama.close()

    def _generate_group(
        self, group: list[_Item], generation: GenerationConfig, stop: threading.Event | None
    ) -> list[list[int]]:
        """Replies (token ids, without the end-of-turn) to prompts taking up to SEQUENCES
        sequences at once: one each, and a second for its contrast prompt (the prompt
        without its memory block) where it is decoded with memory guidance. Each starts from
        the longest start of it kept (a sequence's tokens, its chat's saved states, the
        persona prompt's), and each chat's states are saved after its reply."""
        llama = self._llama
        longest = max(len(p) for item in group for p in (item.prompt, item.contrast or []))
        llama.make_room(longest + generation.max_new_tokens)
        rows = [_Row(item.prompt, llama.n_vocab, item.contrast) for item in group]
        contrasted = [row for row in rows if row.contrast is not None]
        starts = [self._kept_for(item) for item in group]
        slots, logits = llama.prefill(
            [row.prompt for row in rows] + [row.contrast for row in contrasted],  # type: ignore[misc]
            starts + [s for s, row in zip(starts, rows, strict=True) if row.contrast is not None],
        )
        for row, slot, first in zip(rows, slots[: len(rows)], logits[: len(rows)], strict=True):
            row.slot, row.logits = slot, first
        for row, slot, first in zip(
            contrasted, slots[len(rows) :], logits[len(rows) :], strict=True
        ):
            row.contrast_slot, row.contrast_logits = slot, first
        for row in rows:
            row.pending = self._next_token(row, generation)
        while True:
            going = []
            for row in rows:
                token, row.pending = row.pending, None
                if token is None or token in self._stop_ids:
                    continue
                row.reply.append(token)
                row.seen[token] = True
                if len(row.reply) < generation.max_new_tokens and not any(
                    llama.full(slot) for slot in row.slots()
                ):
                    going.append(row)
            if not going or (stop is not None and stop.is_set()):
                break
            steps = [(slot, row.reply[-1]) for row in going for slot in row.slots()]
            out = iter(llama.step(steps))
            for row in going:
                row.logits = next(out)
                if row.contrast is not None:
                    row.contrast_logits = next(out)
                row.pending = self._next_token(row, generation)
        for item, row in zip(group, rows, strict=True):
            if item.chat is not None and self.states.bound_bytes > 0:
                self.states.put(f"chat:{item.chat}", llama.save(row.slot))
                if row.contrast is not None:
                    self.states.put(f"contrast:{item.chat}", llama.save(row.contrast_slot))
        return [row.reply for row in rows]

    def _kept_for(self, item: _Item) -> list[SavedState]:
        """The saved states a prompt (or its contrast) may start from: its chat's, and the
        persona prompt's."""
        keys = [f"chat:{item.chat}", f"contrast:{item.chat}"] if item.chat is not None else []
        keys.append(_prefix_key(item.persona))
        return [state for key in keys if (state := self.states.get(key)) is not None]

    def _persona_prefix(self, conversation: list[ChatMessage], prompt: list[int]) -> list[int]:
        """The start of the prompt every chat with this persona prompt shares: the system turn
        as the template renders it before any message (a prompt with no system turn: none)."""
        if not conversation or conversation[0]["role"] != "system":
            return []
        system = conversation[0]["content"]
        probe = self._persona_probes.get(system)
        if probe is None:
            if len(self._persona_probes) >= 16:  # admins changed it often: start over
                self._persona_probes.clear()
            empty: list[ChatMessage] = [conversation[0], {"role": "user", "content": ""}]
            probe = self._persona_probes[system] = encode_prompt(self.tokenizer, empty)
        return prompt[: min(shared_start(probe, prompt), len(prompt) - 1)]

    def _save_persona_prefixes(self, group: list[_Item]) -> None:
        """Read each persona prompt not yet kept once, alone, and keep its state: every chat
        the engine has no state of starts from it."""
        if self.states.bound_bytes <= 0:
            return
        for persona in {tuple(item.persona) for item in group if item.persona}:
            key = _prefix_key(list(persona))
            if key not in self.states:
                (slot,), _ = self._llama.prefill([list(persona)])
                self.states.put(key, self._llama.save(slot))

    def _next_token(self, row: _Row, generation: GenerationConfig) -> int:
        tokens, probabilities = next_token_distribution(
            row.logits, row.seen, generation, self._top_k, contrast=row.contrast_logits
        )
        if tokens.size == 1:
            return int(tokens[0])
        # torch's generator, as the transformers engine draws from: torch.manual_seed makes
        # a sampled reply repeatable on either engine (the eval's seeded draws).
        return int(tokens[int(torch.multinomial(torch.from_numpy(probabilities), 1))])


def next_token_distribution(
    logits: np.ndarray,
    seen: np.ndarray,
    generation: GenerationConfig,
    top_k: int,
    *,
    contrast: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The tokens the next one is drawn from, and their probabilities: with memory guidance
    against the `contrast` logits (the prompt without its memory block) where given
    (trainer.guidance), then transformers' sampling steps in the order its `generate` applies
    them (trainer.generation.sampling_scores: the repetition penalty on every token `seen`,
    temperature, top-k, top-p; at temperature 0 the likeliest token alone). Both in-process
    engines thus decode alike by construction."""
    # float64: the probabilities of 49k-262k tokens are summed and drawn from.
    scores = torch.from_numpy(logits.astype(np.float64))[None]
    if contrast is not None:
        scores = guided_scores(
            scores, torch.from_numpy(contrast.astype(np.float64))[None], generation.memory_guidance
        )[0]
    scores = sampling_scores(scores, torch.from_numpy(seen)[None], generation, top_k)[0]
    if generation.temperature == 0:
        return np.array([int(scores.argmax())]), np.ones(1)
    probabilities = torch.softmax(scores, -1).numpy()
    kept = np.flatnonzero(probabilities)
    return kept, probabilities[kept] / probabilities[kept].sum()


@dataclass(frozen=True)
class _Item:
    """One conversation to answer, as the engine reads it."""

    prompt: list[int]
    contrast: list[int] | None  # the prompt without its memory block, when guided
    chat: str | None  # whose it is: its saved states are kept under this key (None: none)
    persona: list[int]  # the start every chat with its persona prompt shares


def _prefix_key(persona: list[int]) -> str:
    return "persona:" + hashlib.sha256(np.asarray(persona, dtype=np.int64).tobytes()).hexdigest()


def _groups(items: list[_Item]) -> list[list[_Item]]:
    """Prompts (with their contrast prompts) in groups that fit SEQUENCES sequences, in order."""
    groups: list[list[_Item]] = []
    used = SEQUENCES
    for item in items:
        needs = 1 if item.contrast is None else 2
        if used + needs > SEQUENCES:
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += needs
    return groups


@dataclass
class _Row:
    """One conversation being answered."""

    prompt: list[int]
    n_vocab: int
    contrast: list[int] | None = None  # the prompt without its memory block, when guided
    reply: list[int] = field(default_factory=list)
    pending: int | None = None  # the token just picked, not yet in the reply
    slot: int = -1  # its llama.cpp sequence, set by prefill
    contrast_slot: int = -1
    logits: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    contrast_logits: np.ndarray | None = None
    seen: np.ndarray = field(init=False)  # which tokens the repetition penalty applies to

    def __post_init__(self) -> None:
        self.seen = np.zeros(self.n_vocab, dtype=bool)
        self.seen[np.asarray(self.prompt, dtype=np.int64)] = True

    def slots(self) -> list[int]:
        return [self.slot] if self.contrast is None else [self.slot, self.contrast_slot]


def base_gguf_path(config: Config) -> Path:
    """The base as a GGUF: the embedded model's own file, else `[serving] gguf`."""
    base = config.model.base
    if base in EMBEDDED:
        return gguf_file(EMBEDDED[base], config.model_cache)
    if not config.serving.gguf:
        raise TwinError(
            f'[serving] engine = "llama.cpp" needs [serving] gguf: a GGUF of the base {base!r} '
            "(llama.cpp's convert_hf_to_gguf.py makes one), or use an embedded base"
        )
    path = Path(config.serving.gguf)  # resolved against config.toml's folder at load
    if not path.is_file():
        raise TwinError(f"[serving] gguf {config.serving.gguf!r}: no such file")
    return path


def served_gguf(config: Config, gguf: Path, threads: int) -> Path:
    """The GGUF llama.cpp serves: an embedded base in its `served_type` (made once in the
    model cache, see trainer.embedded), any other as given."""
    model = EMBEDDED.get(config.model.base)
    if model is None or not model.served_type:
        return gguf
    target = config.model_cache / f"{Path(model.gguf).stem}.{model.served_type}.gguf"
    ensure_private_dir(config.model_cache)
    return requantized(gguf, target, model.served_type, threads)


def check_same_model(base: BaseGGUF, checkpoint: str) -> None:
    """Refuse a GGUF that is not the training base: adapters would not fit or mean nothing."""
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(checkpoint)
    hf = getattr(hf, "text_config", hf)
    architecture = architecture_of(base)
    differences = []
    if hf.model_type not in architecture.hf_model_types:
        differences.append(f"architecture {base.architecture} vs {hf.model_type}")
    for what, ours, theirs in (
        ("layers", base.block_count, hf.num_hidden_layers),
        ("embedding width", base.embedding_length, hf.hidden_size),
        ("vocabulary", base.vocab_size, hf.vocab_size),
    ):
        if ours != theirs:
            differences.append(f"{what} {ours} vs {theirs}")
    if differences:
        raise TwinError(
            f"{base.path} is not the training base {checkpoint}: {', '.join(differences)}; "
            "set [serving] gguf to a GGUF of that very model"
        )


def _transformers_top_k(checkpoint: str) -> int:
    """The top-k transformers' generate samples with for the checkpoint (a missing or
    unreadable generation config: transformers' default)."""
    from transformers import GenerationConfig as HFGenerationConfig

    try:
        return sampling_top_k(HFGenerationConfig.from_pretrained(checkpoint))
    except (OSError, ValueError):
        return sampling_top_k(None)


def _newer(path: Path, than: Path) -> bool:
    try:
        return path.stat().st_mtime > than.stat().st_mtime
    except OSError:
        return False
