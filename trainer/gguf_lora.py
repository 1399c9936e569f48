"""A PEFT LoRA adapter as a llama.cpp GGUF LoRA adapter: what the llama.cpp engine serves.

twin trains its adapters with PEFT on a transformers checkpoint (for an embedded base: the
GGUF's own weights, dequantized). llama.cpp serves the GGUF itself and takes a LoRA as a GGUF
file of its own: per adapted weight `blk.N.<tensor>.weight`, a pair `<name>.lora_a` (rank x
in) and `<name>.lora_b` (out x rank), plus `general.type = adapter`, `adapter.type = lora`,
`adapter.lora.alpha` and the base's `general.architecture` (llama.cpp refuses an adapter of
another architecture). llama.cpp adds `scale * B @ (A @ x)` to the base weight's output, with
`scale = adapter.lora.alpha / rank` as PEFT does.

What a conversion must get right, learned from llama.cpp's own converter (convert_lora_to_gguf.py,
which runs each LoRA through the base model's convert_hf_to_gguf tensor transformations:
conversion/llama.py, conversion/gemma.py) and from the adapter loader (src/llama-adapter.cpp):

- names: the HF module `model.layers.N.self_attn.q_proj` is the GGUF tensor `blk.N.attn_q`,
  and likewise for k, v, o and the MLP's gate, up and down (gguf-py's tensor_mapping.py: the
  same for llama and gemma3);
- layout: PEFT's lora_A (rank x in) and lora_B (out x rank), read as numpy arrays, are exactly
  the ggml tensors lora_a and lora_b (ggml lists dimensions innermost first), so nothing is
  transposed: llama-adapter.cpp checks `model.ne[0] == a.ne[0]` (in) and `model.ne[1] ==
  b.ne[1]` (out);
- llama's q and k: the GGUF stores their output rows permuted (see `_permute_rows`), so the
  rows of lora_B are permuted the same way; gemma3 needs nothing of the kind.
"""

from __future__ import annotations

import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twin.core.errors import TwinError

GGUF_ADAPTER = "adapter.gguf"  # the converted adapter's name in its registry folder


class AdapterUnfit(TwinError):
    """An adapter that cannot become a GGUF LoRA of this base; the message says why."""


@dataclass(frozen=True)
class Architecture:
    """What the conversion needs to know of one llama.cpp architecture."""

    # The transformers `model_type`s of a checkpoint of this architecture.
    hf_model_types: tuple[str, ...]
    # Whether the GGUF stores q/k output rows permuted from the transformers order.
    permutes_qk: bool


ARCHITECTURES = {
    # SmolLM2 is a Llama. llama.cpp runs llama with "normal" RoPE, which rotates adjacent pairs
    # of a head's dimensions (0,1), (2,3)...; transformers rotates the two halves (i, i + d/2).
    # So convert_hf_to_gguf (conversion/llama.py, LlamaModel.permute) reorders the rows of q
    # and k inside each head, and transformers' GGUF loader undoes it
    # (LlamaTensorProcessor._reverse_permute_weights): the checkpoint twin trains on has the
    # transformers order, the GGUF the llama.cpp one.
    # Mistral checkpoints convert the same way (convert_hf_to_gguf registers them as LlamaModel).
    "llama": Architecture(hf_model_types=("llama", "mistral"), permutes_qk=True),
    # Gemma 3 runs with NEOX RoPE in llama.cpp (llama-model.cpp, llama_model_rope_type), the
    # transformers layout: conversion/gemma.py (Gemma3Model) permutes nothing. Its other
    # transformations do not touch LoRA: the +1 on norm weights (Gemma3RMSNorm) is on norms,
    # never adapted, and dropping out-of-vocabulary embedding rows is on token_embd, which
    # twin's "all-linear" LoRA does not adapt (transformers' loader for a GGUF-made
    # checkpoint, Gemma2TensorProcessor, likewise only shifts the norms back).
    "gemma3": Architecture(hf_model_types=("gemma3_text", "gemma3"), permutes_qk=False),
}

# PEFT's name of each adapted module in a decoder layer -> llama.cpp's tensor in block N.
# (gguf-py tensor_mapping.py: MODEL_TENSOR.ATTN_Q "model.layers.{bid}.self_attn.q_proj" is
# "blk.{bid}.attn_q", and so on; the same names for both architectures.)
PROJECTIONS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}

# base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight: PeftModel wraps the
# CausalLM (`base_model.model.`), whose decoder is `model.`.
_LORA_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(?P<block>\d+)\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$"
)


@dataclass(frozen=True)
class BaseGGUF:
    """The parts of a base GGUF an adapter must fit, read from its header (no weights)."""

    path: Path
    architecture: str
    block_count: int
    embedding_length: int
    vocab_size: int
    head_count: int
    head_count_kv: int
    context_length: int
    shapes: dict[str, tuple[int, ...]]  # tensor name -> shape as torch writes it: (out, in)


def read_base_gguf(path: Path) -> BaseGGUF:
    """The architecture, sizes and tensor shapes of the GGUF at `path`."""
    try:
        metadata, shapes = _read_header(path)
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as err:
        raise TwinError(f"{path}: not a readable GGUF file ({err})") from None

    def value(key: str) -> Any:
        if key not in metadata:
            raise TwinError(f"{path}: the GGUF has no {key}")
        return metadata[key]

    architecture = str(value("general.architecture"))
    # llama.cpp's n_vocab: one logit per token of the GGUF's vocabulary.
    tokens = metadata.get("tokenizer.ggml.tokens")
    vocab = tokens if isinstance(tokens, int) else shapes.get("token_embd.weight", (0,))[0]
    return BaseGGUF(
        path=path,
        architecture=architecture,
        block_count=int(value(f"{architecture}.block_count")),
        embedding_length=int(value(f"{architecture}.embedding_length")),
        vocab_size=int(vocab),
        head_count=int(value(f"{architecture}.attention.head_count")),
        head_count_kv=int(value(f"{architecture}.attention.head_count_kv")),
        context_length=int(value(f"{architecture}.context_length")),
        shapes=shapes,
    )


# GGUF value types (gguf-py's GGUFValueType) with a fixed size: their struct formats.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """A GGUF's metadata (an array as its length) and tensor shapes (torch's order).

    gguf-py's GGUFReader parses every array element into numpy views, which takes seconds
    for a vocabulary of 50k-260k tokens and merges; this reads the header and skips them.
    """
    with path.open("rb") as f:

        def read(fmt: str) -> Any:
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return f.read(read("<Q")).decode("utf-8")

        def skip(kind: int, count: int) -> None:
            if kind == _STRING:
                for _ in range(count):
                    f.seek(read("<Q"), os.SEEK_CUR)
            elif kind in _SCALARS:
                f.seek(count * struct.calcsize(_SCALARS[kind]), os.SEEK_CUR)
            else:
                raise ValueError(f"array of GGUF type {kind}")

        if f.read(4) != b"GGUF":
            raise ValueError("no GGUF magic")
        version = read("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}")
        n_tensors, n_metadata = read("<Q"), read("<Q")
        metadata: dict[str, Any] = {}
        for _ in range(n_metadata):
            key, kind = string(), read("<I")
            if kind == _STRING:
                metadata[key] = string()
            elif kind == _ARRAY:
                item, count = read("<I"), read("<Q")
                skip(item, count)
                metadata[key] = count
            else:
                metadata[key] = read(_SCALARS[kind])
        shapes = {}
        for _ in range(n_tensors):
            name, dims = string(), read("<I")
            ne = [read("<Q") for _ in range(dims)]
            read("<I"), read("<Q")  # its type and offset
            # ggml lists dimensions innermost first; reversed, they read as torch's (out, in).
            shapes[name] = tuple(reversed(ne))
    return metadata, shapes


def architecture_of(base: BaseGGUF) -> Architecture:
    try:
        return ARCHITECTURES[base.architecture]
    except KeyError:
        raise TwinError(
            f"{base.path.name}: llama.cpp architecture {base.architecture!r} is not one twin "
            f"converts adapters for (only {', '.join(ARCHITECTURES)}); serve this base with "
            '[serving] engine = "transformers"'
        ) from None


def gguf_lora_tensors(
    adapter_config: dict[str, Any], state: dict[str, Any], base: BaseGGUF
) -> dict[str, np.ndarray]:
    """The GGUF LoRA tensors (float32, by llama.cpp name) of a PEFT adapter: its
    adapter_config.json and weights (torch tensors by PEFT name). Raises AdapterUnfit for
    anything llama.cpp could not serve as it was trained: a module llama.cpp's LoRA cannot
    take, a shape that does not fit the base, non-finite weights, a PEFT variant it lacks."""
    architecture = architecture_of(base)
    _check_adapter_config(adapter_config)
    alpha = float(adapter_config["lora_alpha"])
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in state.items():
        match = _LORA_KEY.match(key)
        module = match["module"] if match else None
        if match is None or module not in PROJECTIONS:
            raise AdapterUnfit(
                f"{key}: llama.cpp's LoRA takes only the attention and MLP projections "
                f"({', '.join(sorted(PROJECTIONS))}) of the decoder layers"
            )
        block = int(match["block"])
        if block >= base.block_count:
            raise AdapterUnfit(f"{key}: the base has {base.block_count} layers, not {block + 1}")
        array = tensor.float().numpy()
        if not np.isfinite(array).all():
            raise AdapterUnfit(f"{key} has non-finite weights")
        pairs.setdefault(f"blk.{block}.{PROJECTIONS[module]}.weight", {})[match["ab"]] = array

    if not pairs:
        raise AdapterUnfit("the adapter has no LoRA weights")
    tensors: dict[str, np.ndarray] = {}
    for name, pair in sorted(pairs.items(), key=lambda item: _natural(item[0])):
        if set(pair) != {"A", "B"}:
            raise AdapterUnfit(f"{name}: the adapter has lora_{''.join(pair)} without its pair")
        a, b = pair["A"], pair["B"]
        shape = base.shapes.get(name)
        if shape is None:
            raise AdapterUnfit(f"the base GGUF has no {name} for the adapter to adapt")
        if (
            a.ndim != 2
            or b.ndim != 2
            or a.shape[0] != b.shape[1]
            or (b.shape[0], a.shape[1]) != shape
        ):
            raise AdapterUnfit(
                f"{name}: LoRA A {a.shape} and B {b.shape} do not fit the base's "
                f"{shape[0]} x {shape[1]} weight"
            )
        rank = a.shape[0]
        # llama.cpp scales by alpha / rank (llama_adapter_lora_weight::get_scale, the rank from
        # the tensor); rsLoRA trains with alpha / sqrt(rank): the difference goes into B.
        factor = _peft_scale(adapter_config, alpha, rank) / (alpha / rank)
        if factor != 1.0:
            b = b * np.float32(factor)
        if architecture.permutes_qk and name.endswith((".attn_q.weight", ".attn_k.weight")):
            heads = base.head_count if ".attn_q." in name else base.head_count_kv
            # W = B @ A: permuting W's output rows is permuting B's rows (A is per input).
            b = _permute_rows(b, heads)
        tensors[f"{name[: -len('.weight')]}.weight.lora_a"] = np.ascontiguousarray(a)
        tensors[f"{name[: -len('.weight')]}.weight.lora_b"] = np.ascontiguousarray(b)
    return tensors


def save_gguf_lora(
    tensors: dict[str, np.ndarray], alpha: float, architecture: str, out: Path
) -> Path:
    """Write `tensors` as a GGUF LoRA adapter to `out`: a temporary file created 0600 (the
    adapter is learned from the owner's chats), fsynced, then renamed over `out`, so a
    reader never sees half a file."""
    import gguf

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(tmp, architecture)  # writes general.architecture itself
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        for name, array in tensors.items():
            writer.add_tensor(name, array.astype(np.float32, copy=False))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        with tmp.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _check_adapter_config(adapter_config: dict[str, Any]) -> None:
    """PEFT variants whose forward pass llama.cpp's plain LoRA would not reproduce."""
    if adapter_config.get("use_dora"):
        raise AdapterUnfit("a DoRA adapter: llama.cpp serves plain LoRA only")
    if adapter_config.get("trainable_token_indices"):
        raise AdapterUnfit(
            "the adapter also trains token embeddings (a base model's turn markers, as for "
            "gemma3-270m): llama.cpp's LoRA cannot carry them; serve it with the transformers "
            "engine"
        )
    if adapter_config.get("alpha_pattern"):
        raise AdapterUnfit("per-module lora_alpha (alpha_pattern): llama.cpp takes one alpha")
    if (
        not isinstance(adapter_config.get("lora_alpha"), int | float)
        or adapter_config["lora_alpha"] <= 0
    ):
        raise AdapterUnfit("adapter_config.json has no positive lora_alpha")


def _peft_scale(adapter_config: dict[str, Any], alpha: float, rank: int) -> float:
    """The factor PEFT multiplies B @ A by (peft.tuners.lora.layer: `scaling`)."""
    return alpha / math.sqrt(rank) if adapter_config.get("use_rslora") else alpha / rank


def _permute_rows(b: np.ndarray, heads: int) -> np.ndarray:
    """Reorder the output rows of q or k from transformers' RoPE order to llama.cpp's.

    Within each head of d rows, transformers keeps the two rotated halves apart (rows 0..d/2-1,
    then d/2..d-1); llama.cpp wants each rotated pair adjacent. Viewing a head as (2, d/2) rows
    and swapping the two axes interleaves them: row i of the first half, then row i of the
    second. This is conversion/llama.py's LlamaModel.permute, with k using the kv head count.
    """
    rows = b.shape[0]
    half = rows // heads // 2
    return b.reshape(heads, 2, half, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def _natural(name: str) -> tuple[Any, ...]:
    """blk.2 before blk.10: the file lists tensors in layer order, like llama.cpp's own."""
    return tuple(int(p) if p.isdigit() else p for p in name.split("."))
