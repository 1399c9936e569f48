"""llama.cpp's C API through llama-cpp-python's ctypes bindings: a model, a context of
SEQUENCES sequences, a LoRA adapter on it, and the tokens each sequence holds in its KV cache.
The llama.cpp engine (serving.llamacpp) decides what to evaluate and samples; this module
only drives the library, and routes its log into twin's logging.

llama_cpp (llama-cpp-python) is imported here only, when a context is made.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.chat_states import SavedState
from twin.core.errors import TwinError

log = logging.getLogger(__name__)

SEQUENCES = 8  # conversations decoded together; a larger call goes in groups of this many
BATCH = 512  # prompt tokens per llama_decode call
INSTALL = "pip install llama-cpp-python (builds llama.cpp from source: a few minutes)"


class LlamaContext:
    """llama.cpp through llama-cpp-python's C bindings: the model, a context with SEQUENCES
    sequences, the LoRA adapter on it, and what each sequence holds in the KV cache."""

    def __init__(self, gguf: Path, threads: int, room: int) -> None:
        llama_cpp = _library()
        self.lib: Any = llama_cpp
        llama_cpp.llama_backend_init()
        for line in build_mismatch(llama_cpp.llama_print_system_info().decode(), cpu_flags()):
            log.warning("llama.cpp: %s", line)
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
        self.read = 0  # prompt tokens evaluated since the start (not the replies' own)
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

    def prefill(
        self, prompts: list[list[int]], saved: list[list[SavedState]] | None = None
    ) -> tuple[list[int], list[np.ndarray]]:
        """Give each prompt a sequence and evaluate it: the sequences, and the logits after
        each prompt.

        Each prompt takes the free sequence whose cached tokens share the longest start with
        it, or, where one of its `saved` states shares a longer one, that state restored into
        the sequence; and evaluates only the rest (at least its last token, for fresh
        logits)."""
        lib, memory = self.lib, self.lib.llama_get_memory(self.ctx)
        free = list(range(SEQUENCES))
        work: list[tuple[int, int, list[int]]] = []  # (sequence, first position, tokens)
        for i, prompt in enumerate(prompts):
            lives = {s: shared_start(self.cached[s], prompt) for s in free}
            slot = max(free, key=lives.__getitem__)
            live = lives[slot]
            free.remove(slot)
            shared, best = live, None
            for state in saved[i] if saved else []:
                if (reach := shared_start(state.tokens, prompt)) > shared:
                    shared, best = reach, state
            if best is not None:
                shared = self._restore(slot, best, shared)
            keep = min(shared, len(prompt) - 1)
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
        self.read += len(queue)
        return [slot for slot, _, _ in work], [last[slot] for slot, _, _ in work]

    def save(self, slot: int) -> SavedState | None:
        """The sequence's KV cache as llama.cpp serializes it, with the tokens it holds; None
        where llama.cpp could not write it (then nothing is kept: a later prompt reads more,
        nothing else changes)."""
        lib = self.lib
        size = lib.llama_state_seq_get_size(self.ctx, slot)
        # llama.cpp writes straight into the bytes kept (no second copy of tens of MB).
        data = bytearray(size)
        written = lib.llama_state_seq_get_data(
            self.ctx, (ctypes.c_uint8 * size).from_buffer(data), size, slot
        )
        if size == 0 or written != size:
            log.warning("llama.cpp could not save a sequence's state (%d bytes)", size)
            return None
        return SavedState(tuple(self.cached[slot]), data)

    def _restore(self, slot: int, state: SavedState, shared: int) -> int:
        """Put a saved state into the sequence, in place of what it held; how many of the
        prompt's tokens it now holds (`shared`). One that does not restore (llama.cpp
        refuses it) leaves the sequence empty (0): the prompt is read anew."""
        lib = self.lib
        size = len(state.data)
        buffer = (ctypes.c_uint8 * size).from_buffer(state.data)
        if lib.llama_state_seq_set_data(self.ctx, buffer, size, slot) == 0:
            lib.llama_memory_seq_rm(lib.llama_get_memory(self.ctx), slot, -1, -1)
            self.cached[slot] = []
            return 0
        self.cached[slot] = list(state.tokens)
        return shared

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


def requantized(source: Path, target: Path, ggml_type: str, threads: int) -> Path:
    """`source` rewritten by llama.cpp in another weight type (e.g. "q8_0") at `target`, made
    once: a target newer than its source is reused. Written beside it first, then renamed, so
    a process stopped halfway leaves no half file behind."""
    llama_cpp = _library()
    try:
        if target.stat().st_mtime >= source.stat().st_mtime:
            return target
    except OSError:
        pass
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ggml_type.upper()}", None)
    if ftype is None:
        raise TwinError(f"llama.cpp has no weight type {ggml_type!r}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = threads
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params):
            raise TwinError(f"llama.cpp cannot rewrite {source.name} as {ggml_type}")
        os.replace(partial, target)
    except OSError as err:
        raise TwinError(f"cannot write {target}: {err}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


# The instruction sets llama.cpp's CPU kernels are built for: how llama_print_system_info()
# names each (`AVX2 = 1`), and how the kernel names it in /proc/cpuinfo.
_INSTRUCTION_SETS = {
    "AVX2": "avx2",
    "AVX512": "avx512f",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
REBUILD = (
    'CMAKE_ARGS="-DGGML_NATIVE=ON" .venv/bin/pip install --force-reinstall --no-cache-dir '
    "--no-deps llama-cpp-python"
)


def build_mismatch(system_info: str, cpu: set[str]) -> list[str]:
    """What is wrong with llama.cpp's build for this CPU, one line each (none: it fits).
    pip builds llama-cpp-python for the CPU it builds on and caches the wheel: on another CPU
    it may use instructions this one lacks (it dies with SIGILL) or leave out ones it has
    (slower)."""
    built = {name for name in _INSTRUCTION_SETS if f"| {name} = 1 " in f"| {system_info} "}
    lacking = sorted(n for n in built if _INSTRUCTION_SETS[n] not in cpu)
    unused = sorted(n for n, flag in _INSTRUCTION_SETS.items() if flag in cpu and n not in built)
    lines = []
    if lacking:
        lines.append(
            f"built for {', '.join(lacking)}, which this CPU lacks: it may die with an illegal "
            f"instruction; rebuild it here: {REBUILD}"
        )
    if unused:
        lines.append(
            f"this CPU has {', '.join(unused)}, which the build does not use (built on "
            f"another CPU): rebuild it here for speed: {REBUILD}"
        )
    return lines


def cpu_flags() -> set[str]:
    """The CPU's instruction-set flags as the kernel lists them (empty where unreadable)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _library() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise TwinError(
            f'[serving] engine = "llama.cpp" needs llama-cpp-python: {INSTALL}'
        ) from None
    _route_llama_log(llama_cpp)
    return llama_cpp


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


def shared_start(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens `a` and `b` start with alike."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
