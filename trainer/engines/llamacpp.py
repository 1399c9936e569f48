"""The llama.cpp engine: the base GGUF on the CPU, each adapter converted to a GGUF LoRA.

The embedded bases ship as GGUF files, and training used those very weights (dequantized):
llama.cpp runs the GGUF's 4-bit weights directly, a quarter of fp32's memory traffic per
generated token. On 2 cores it generated tokens 1.9x (on a quiet machine 3.8x) as fast as
transformers fp32, but read prompts more slowly (no AMX or repacked kernels for Q4_1 there;
see bench/llamacpp.py): it pays for long replies and for a chat going on, whose earlier turns
it keeps, not for a first short reply to a long prompt. What makes it serve what was trained:

- the prompt: rendered by twin's chat format with the training base's own HF tokenizer, and
  given to llama.cpp as token ids (llama.cpp's tokenizer and chat template are never used);
- the reply: sampled here from llama.cpp's logits the way transformers' `generate` samples
  (repetition penalty over the prompt and the reply, then temperature, top-k, top-p; greedy
  at temperature 0), stopped on the end-of-turn tokens twin's generation stops on, decoded by
  the HF tokenizer;
- the adapter: checked (readable, finite, trained on this base, every LoRA matrix the right
  shape for the GGUF's tensors), converted once to `adapter.gguf` beside it
  (trainer.gguf_lora), then loaded onto the model between two batches; a refused one
  changes nothing.

Conversations of one `generate` call are decoded together, one llama.cpp sequence each (up
to SEQUENCES at a time). Each sequence keeps its tokens in the KV cache after the reply, so
the next prompt that starts the same way (the persona prompt, the same chat going on) only
evaluates what is new; a swapped adapter clears them.

llama_cpp (llama-cpp-python) is imported here only, when the engine is built.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.embedded import EMBEDDED, gguf_file
from trainer.engines import AdapterRefused, EngineUnavailable
from trainer.engines.checks import read_adapter
from trainer.gguf_lora import (
    GGUF_ADAPTER,
    AdapterUnfit,
    BaseGGUF,
    architecture_of,
    gguf_lora_tensors,
    read_base_gguf,
    save_gguf_lora,
)
from trainer.model import base_checkpoint, load_tokenizer
from twin.core.chat_format import encode_prompt
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage
from twin.core.errors import TwinError
from twin.core.generation import stop_tokens

log = logging.getLogger(__name__)

SEQUENCES = 8  # conversations decoded together; a larger call goes in groups of this many
BATCH = 512  # prompt tokens per llama_decode call
INSTALL = "pip install llama-cpp-python (builds llama.cpp from source: a few minutes)"


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
        self._rng = np.random.default_rng()
        # Room for one conversation: the bot's context (prompt and reply), or a training
        # example with a reply after it (what the eval answers), whichever is longer.
        wanted = max(
            config.bot.context_tokens,
            config.train.max_seq_tokens + config.generation.max_new_tokens,
        )
        self._llama = _Llama(self.gguf, self.threads, min(wanted, self.base.context_length))

    def generate(
        self,
        conversations: list[list[ChatMessage]],
        settings: GenerationConfig,
        *,
        stop: threading.Event | None = None,
    ) -> list[str]:
        prompts = [encode_prompt(self.tokenizer, c) for c in conversations]
        replies: list[list[int]] = []
        for start in range(0, len(prompts), SEQUENCES):
            group = prompts[start : start + SEQUENCES]
            if stop is not None and stop.is_set():
                replies += [[] for _ in group]
                continue
            replies += self._generate_group(group, settings, stop)
        return [self.tokenizer.decode(r, skip_special_tokens=True).strip() for r in replies]

    def swap(self, folder: Path) -> None:
        version = folder.name
        if version == self.version:
            return
        settings, state = read_adapter(folder, self.checkpoint)
        try:
            tensors = gguf_lora_tensors(settings, state, self.base)
        except AdapterUnfit as err:
            raise AdapterRefused(
                f"adapter {version} does not fit {self.gguf.name}: {err}"
            ) from None
        converted = folder / GGUF_ADAPTER
        alpha = float(settings["lora_alpha"])
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
        self, prompts: list[list[int]], settings: GenerationConfig, stop: threading.Event | None
    ) -> list[list[int]]:
        """Replies (token ids, without the end-of-turn) to up to SEQUENCES prompts at once."""
        llama = self._llama
        llama.make_room(max(len(p) for p in prompts) + settings.max_new_tokens)
        rows = [_Row(prompt, llama.n_vocab) for prompt in prompts]
        slots, logits = llama.prefill(prompts)
        for row, slot, first in zip(rows, slots, logits, strict=True):
            row.slot = slot
            row.pending = self._next_token(first, row, settings)
        while True:
            going = []
            for row in rows:
                token, row.pending = row.pending, None
                if token is None or token in self._stop_ids:
                    continue
                row.reply.append(token)
                row.seen[token] = True
                if len(row.reply) < settings.max_new_tokens and not llama.full(row.slot):
                    going.append(row)
            if not going or (stop is not None and stop.is_set()):
                break
            step = llama.step([(row.slot, row.reply[-1]) for row in going])
            for row, next_logits in zip(going, step, strict=True):
                row.pending = self._next_token(next_logits, row, settings)
        return [row.reply for row in rows]

    def _next_token(self, logits: np.ndarray, row: _Row, settings: GenerationConfig) -> int:
        tokens, probabilities = next_token_distribution(logits, row.seen, settings, self._top_k)
        if tokens.size == 1:
            return int(tokens[0])
        return int(tokens[self._rng.choice(tokens.size, p=probabilities)])


def next_token_distribution(
    logits: np.ndarray, seen: np.ndarray, settings: GenerationConfig, top_k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The tokens the next one is drawn from, and their probabilities, as transformers'
    `generate` has them, in its order: the repetition penalty on every token `seen` (a mask:
    the prompt's and the reply's so far), then at temperature 0 the likeliest token alone;
    else temperature, top-k (`top_k`: the model's generation config, else transformers' 50)
    and top-p."""
    scores = logits.astype(np.float64, copy=True)
    if settings.repetition_penalty != 1.0:
        penalized = np.flatnonzero(seen)
        values = scores[penalized]
        scores[penalized] = np.where(
            values < 0, values * settings.repetition_penalty, values / settings.repetition_penalty
        )
    if settings.temperature == 0:
        return np.array([np.argmax(scores)]), np.ones(1)
    scores /= settings.temperature
    k = min(top_k, scores.size) if top_k > 0 else scores.size
    kept = np.argpartition(scores, -k)[-k:]
    kept = kept[np.argsort(scores[kept], kind="stable")]  # ascending, as transformers sorts
    probabilities = np.exp(scores[kept] - scores[kept[-1]])
    probabilities /= probabilities.sum()
    if settings.top_p < 1.0:
        # Drop the least likely tokens whose mass together stays within 1 - top_p; the most
        # likely one always stays (transformers' TopPLogitsWarper).
        drop = np.cumsum(probabilities) <= 1 - settings.top_p
        drop[-1] = False
        probabilities = np.where(drop, 0.0, probabilities)
        probabilities /= probabilities.sum()
    return kept, probabilities


@dataclass
class _Row:
    """One conversation being answered."""

    prompt: list[int]
    n_vocab: int
    reply: list[int] = field(default_factory=list)
    pending: int | None = None  # the token just picked, not yet in the reply
    slot: int = -1  # its llama.cpp sequence, set by prefill
    seen: np.ndarray = field(init=False)  # which tokens the repetition penalty applies to

    def __post_init__(self) -> None:
        self.seen = np.zeros(self.n_vocab, dtype=bool)
        self.seen[np.asarray(self.prompt, dtype=np.int64)] = True


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
    """The top-k transformers' generate samples with: the model's generation config, else 50."""
    from transformers import GenerationConfig as HFGenerationConfig

    try:
        top_k = HFGenerationConfig.from_pretrained(checkpoint).top_k
    except (OSError, ValueError):
        top_k = None
    return 50 if top_k is None else int(top_k)


def _newer(path: Path, than: Path) -> bool:
    try:
        return path.stat().st_mtime > than.stat().st_mtime
    except OSError:
        return False


class _Llama:
    """llama.cpp through llama-cpp-python's C bindings: the model, a context with SEQUENCES
    sequences, the LoRA adapter on it, and what each sequence holds in the KV cache."""

    def __init__(self, gguf: Path, threads: int, room: int) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise TwinError(
                f'[serving] engine = "llama.cpp" needs llama-cpp-python: {INSTALL}'
            ) from None
        self.lib: Any = llama_cpp
        _route_llama_log(llama_cpp)
        llama_cpp.llama_backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0
        # No "extra" CPU buffer types (AMX, repacked weights): llama.cpp's AMX matmul died
        # with SIGILL (on `tilezero`) on a VM whose CPU advertises AMX and grants its use
        # (llama.cpp issues #28328, #20824), and SmolLM2's Q4_1 has no repacked kernels anyway.
        params.use_extra_bufts = False
        self.model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
        if not self.model:
            raise TwinError(f"llama.cpp cannot load {gguf}")
        self.n_vocab = int(
            llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(self.model))
        )
        self.threads = threads
        self.adapter: Any = None
        self.ctx: Any = None
        self.batch: Any = None
        self.room = 0
        self.cached: list[list[int]] = []  # per sequence: the tokens its KV cache holds
        self.make_room(room)

    def make_room(self, tokens: int) -> None:
        """A context where each sequence holds `tokens` (made anew, bigger, when needed)."""
        if self.model is None:
            raise RuntimeError("the llama.cpp engine is closed")
        if tokens <= self.room:
            return
        lib = self.lib
        room = -(-tokens // 256) * 256  # llama.cpp pads each sequence's room to 256 anyway
        params = lib.llama_context_default_params()
        params.n_ctx = room * SEQUENCES
        params.n_seq_max = SEQUENCES
        params.n_batch = params.n_ubatch = BATCH
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        # A sliding-window (Gemma 3) cache forgets old positions; the full one lets a
        # sequence be cut back to a shared prefix and go on from there.
        params.swa_full = True
        ctx = lib.llama_init_from_model(self.model, params)
        if not ctx:
            raise TwinError(f"llama.cpp cannot make a context of {room} tokens x {SEQUENCES}")
        self._free_context()
        self.ctx, self.room = ctx, room
        self.batch = lib.llama_batch_init(BATCH, 0, 1)
        self.cached = [[] for _ in range(SEQUENCES)]
        if self.adapter is not None:
            self._set_adapter(self.adapter)

    def use_adapter(self, path: Path) -> None:
        """Serve the GGUF LoRA at `path`; on failure the current one stays (RuntimeError)."""
        lib = self.lib
        adapter = lib.llama_adapter_lora_init(self.model, str(path).encode())
        if not adapter:
            raise RuntimeError(f"{path.name} does not load (llama.cpp's log says why)")
        try:
            self._set_adapter(adapter)
        except RuntimeError:
            lib.llama_adapter_lora_free(adapter)
            raise
        old, self.adapter = self.adapter, adapter
        if old is not None:
            lib.llama_adapter_lora_free(old)
        self.forget()  # what the KV cache holds was computed with the old adapter

    def forget(self) -> None:
        """Empty the KV cache: the next prompts are evaluated from their first token."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        self.cached = [[] for _ in range(SEQUENCES)]

    def prefill(self, prompts: list[list[int]]) -> tuple[list[int], list[np.ndarray]]:
        """Give each prompt a sequence and evaluate it: the sequences, and the logits after
        each prompt.

        Each prompt takes the free sequence whose cached tokens share the longest start with
        it and evaluates only the rest (at least its last token, for fresh logits)."""
        lib, memory = self.lib, self.lib.llama_get_memory(self.ctx)
        free = list(range(SEQUENCES))
        work: list[tuple[int, int, list[int]]] = []  # (sequence, first position, tokens)
        for prompt in prompts:
            slot = max(free, key=lambda s: _shared(self.cached[s], prompt))
            free.remove(slot)
            keep = min(_shared(self.cached[slot], prompt), len(prompt) - 1)
            if not lib.llama_memory_seq_rm(memory, slot, keep, -1):
                lib.llama_memory_seq_rm(memory, slot, -1, -1)
                keep = 0
            self.cached[slot] = prompt[:keep]
            work.append((slot, keep, prompt[keep:]))
        # Every (sequence, position, token) to evaluate, and where each prompt's last one is.
        queue = [
            (slot, start + i, token, i == len(tokens) - 1)
            for slot, start, tokens in work
            for i, token in enumerate(tokens)
        ]
        last: dict[int, np.ndarray] = {}
        for begin in range(0, len(queue), BATCH):
            chunk = queue[begin : begin + BATCH]
            self._decode([(s, p, t, out) for s, p, t, out in chunk])
            for i, (slot, _, _, out) in enumerate(chunk):
                if out:
                    last[slot] = self._logits(i)
        for slot, _, tokens in work:
            self.cached[slot] += tokens
        return [slot for slot, _, _ in work], [last[slot] for slot, _, _ in work]

    def step(self, tokens: list[tuple[int, int]]) -> list[np.ndarray]:
        """Evaluate one more token in each of these (sequence, token); the next logits."""
        self._decode([(slot, len(self.cached[slot]), token, True) for slot, token in tokens])
        for slot, token in tokens:
            self.cached[slot].append(token)
        return [self._logits(i) for i in range(len(tokens))]

    def full(self, slot: int) -> bool:
        """Whether the sequence has no room left for another token."""
        return len(self.cached[slot]) >= self.room

    def close(self) -> None:
        lib = self.lib
        self._free_context()
        if self.adapter is not None:
            lib.llama_adapter_lora_free(self.adapter)
            self.adapter = None
        if self.model:
            lib.llama_model_free(self.model)
            self.model = None

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (sequence, position, token, wants logits) items."""
        batch = self.batch
        for i, (slot, position, token, out) in enumerate(items):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot
            batch.logits[i] = out
        batch.n_tokens = len(items)
        status = self.lib.llama_decode(self.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed ({status})")

    def _logits(self, i: int) -> np.ndarray:
        pointer = self.lib.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).copy()

    def _set_adapter(self, adapter: Any) -> None:
        lib = self.lib
        adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if lib.llama_set_adapters_lora(self.ctx, adapters, 1, scales) != 0:
            raise RuntimeError("llama.cpp cannot put the adapter on its context")

    def _free_context(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None


# ggml's log levels (ggml.h: NONE, DEBUG, INFO, WARN, ERROR, CONT). llama-cpp-python's own
# callback reads them as they were once numbered and prints llama.cpp's warnings to stderr.
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
_log_callback: Any = None  # kept referenced: llama.cpp calls it for the process's lifetime


def _route_llama_log(lib: Any) -> None:
    """llama.cpp's log into twin's logging, not on stderr: its errors as warnings (a refused
    adapter's reason), the rest at debug and info."""
    global _log_callback
    if _log_callback is not None:
        return
    llama_log = logging.getLogger("llama.cpp")
    last = [logging.DEBUG]

    def forward(level: int, text: bytes, user_data: Any) -> None:
        if level != 5:  # 5: the previous message goes on
            last[0] = _LOG_LEVELS.get(level, logging.DEBUG)
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            llama_log.log(last[0], message)

    _log_callback = lib.llama_log_callback(forward)
    lib.llama_log_set(_log_callback, ctypes.c_void_p(0))


def _shared(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` start with alike."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
