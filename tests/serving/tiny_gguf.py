"""A GGUF of a tiny transformers Llama, so that the llama.cpp engine runs the very weights the
transformers engine runs, and the two can be compared token for token.

It is what llama.cpp's convert_hf_to_gguf.py does for a Llama, cut down to what a test's model
needs: F32 tensors under llama.cpp's names, q and k rows permuted to llama.cpp's RoPE order
(trainer.gguf_lora's permutation, the one the LoRA conversion uses), the hyperparameters
from config.json. The tokenizer metadata is copied from the embedded SmolLM2 GGUF: the tests'
tiny models carry SmolLM2's tokenizer, and llama.cpp reads its vocabulary from the GGUF (its
n_vocab, one logit per token, is that vocabulary's size) even though twin never lets llama.cpp
tokenize.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from trainer.gguf_lora import PROJECTIONS, _permute_rows

# transformers' per-layer norms -> llama.cpp's (gguf-py tensor_mapping.py); the projections
# are trainer.gguf_lora's PROJECTIONS.
NORMS = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def write_tiny_gguf(hf_folder: Path, tokenizer_gguf: Path, out: Path) -> Path:
    """Write the Llama checkpoint in `hf_folder` as an F32 GGUF at `out`, with the tokenizer
    of the GGUF at `tokenizer_gguf` (which must be the checkpoint's own, vocabulary and all)."""
    import torch
    from transformers import AutoModelForCausalLM

    # Through the model, not the safetensors: tied embeddings may be saved once only.
    model = AutoModelForCausalLM.from_pretrained(hf_folder, dtype=torch.float32)
    config = model.config
    assert config.model_type == "llama", f"{hf_folder}: a {config.model_type}, not a llama"
    rope = getattr(config, "rope_parameters", None) or {"rope_theta": config.rope_theta}
    # llama3 / yarn scaling would need more keys (and a rope_freqs tensor): not for tests.
    assert rope.get("rope_type", "default") == "default", f"{hf_folder}: rope {rope}"
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    writer = gguf.GGUFWriter(out, "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    _copy_tokenizer(gguf.GGUFReader(tokenizer_gguf), writer, config.vocab_size)

    def add(name: str, array: np.ndarray) -> None:
        writer.add_tensor(name, np.ascontiguousarray(array, dtype=np.float32))

    add("token_embd.weight", state["model.embed_tokens.weight"])
    for block in range(config.num_hidden_layers):
        layer = f"model.layers.{block}"
        for module, norm in NORMS.items():
            add(f"blk.{block}.{norm}.weight", state[f"{layer}.{module}.weight"])
        for module, tensor in PROJECTIONS.items():
            weight = state[f"{layer}.{module}.weight"]
            # llama.cpp rotates adjacent pairs of a head, transformers its two halves.
            if tensor == "attn_q":
                weight = _permute_rows(weight, config.num_attention_heads)
            elif tensor == "attn_k":
                weight = _permute_rows(weight, config.num_key_value_heads)
            add(f"blk.{block}.{tensor}.weight", weight)
    add("output_norm.weight", state["model.norm.weight"])
    # Tied: llama.cpp falls back on token_embd for the output, as transformers does.
    if not config.tie_word_embeddings:
        add("output.weight", state["lm_head.weight"])

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _copy_tokenizer(source: gguf.GGUFReader, writer: gguf.GGUFWriter, vocab_size: int) -> None:
    """Every tokenizer.ggml.* key of `source` into `writer`, with its value types."""
    tokens = source.get_field("tokenizer.ggml.tokens")
    assert tokens is not None and len(tokens.data) == vocab_size, (
        f"the tokenizer GGUF has {len(tokens.data) if tokens else 0} tokens, "
        f"the model {vocab_size}: not the model's tokenizer"
    )
    for key, field in source.fields.items():
        if key.startswith("tokenizer.ggml."):
            array = field.types[0] == gguf.GGUFValueType.ARRAY
            sub_type = field.types[-1] if array else None
            writer.add_key_value(key, field.contents(), field.types[0], sub_type)
