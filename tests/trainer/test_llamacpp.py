"""The llama.cpp engine: PEFT adapters converted to GGUF LoRA, and replies from the real
embedded SmolLM2 GGUF that follow what transformers serves."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.trainer.helpers import PROMPTS, write_dataset
from trainer.gguf_lora import (
    ARCHITECTURES,
    PROJECTIONS,
    AdapterUnfit,
    _permute_rows,
    gguf_lora_tensors,
    read_base_gguf,
    save_gguf_lora,
)
from twin.core.chat_format import encode_prompt
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage, with_system_prompt
from twin.core.errors import TwinError
from twin.core.loading import load_config

# A toy decoder: 2 layers, width 32, 4 query heads of 8 and 2 kv heads, MLP 48, rank 4.
LAYERS, WIDTH, HEADS, KV_HEADS, MLP, RANK, ALPHA = 2, 32, 4, 2, 48, 4, 8
SHAPES = {  # (out, in) of each adapted projection
    "self_attn.q_proj": (WIDTH, WIDTH),
    "self_attn.k_proj": (KV_HEADS * WIDTH // HEADS, WIDTH),
    "self_attn.v_proj": (KV_HEADS * WIDTH // HEADS, WIDTH),
    "self_attn.o_proj": (WIDTH, WIDTH),
    "mlp.gate_proj": (MLP, WIDTH),
    "mlp.up_proj": (MLP, WIDTH),
    "mlp.down_proj": (WIDTH, MLP),
}


def write_toy_base(path: Path, architecture: str) -> Path:
    """A base GGUF with the header and tensor shapes of a tiny model (zeros for weights)."""
    import gguf

    writer = gguf.GGUFWriter(path, architecture)
    writer.add_block_count(LAYERS)
    writer.add_embedding_length(WIDTH)
    writer.add_context_length(256)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_token_list([f"t{i}" for i in range(64)])
    writer.add_tensor("token_embd.weight", np.zeros((64, WIDTH), dtype=np.float32))
    for block in range(LAYERS):
        for module, shape in SHAPES.items():
            name = f"blk.{block}.{PROJECTIONS[module]}.weight"
            writer.add_tensor(name, np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_toy_adapter(folder: Path, **adapter_keys: object) -> dict[str, torch.Tensor]:
    """A PEFT-shaped adapter on the toy base, as `save_pretrained` writes one."""
    torch.manual_seed(0)
    state = {}
    for block in range(LAYERS):
        for module, (out, inp) in SHAPES.items():
            key = f"base_model.model.model.layers.{block}.{module}"
            state[f"{key}.lora_A.weight"] = torch.randn(RANK, inp)
            state[f"{key}.lora_B.weight"] = torch.randn(out, RANK)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "adapter_model.safetensors"))
    config = {"r": RANK, "lora_alpha": ALPHA, "base_model_name_or_path": "toy", **adapter_keys}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return state


def write_gguf_lora(adapter_dir: Path, base_gguf: Path, out: Path) -> Path:
    """The conversion the llama.cpp engine makes when it swaps an adapter in: the PEFT
    adapter in `adapter_dir` as a GGUF LoRA of `base_gguf`, written to `out`."""
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    state = load_file(str(adapter_dir / "adapter_model.safetensors"))
    base = read_base_gguf(base_gguf)
    tensors = gguf_lora_tensors(adapter_config, state, base)
    return save_gguf_lora(tensors, float(adapter_config["lora_alpha"]), base.architecture, out)


def read_adapter_gguf(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    meta: dict[str, object] = {}
    for key in ("general.architecture", "general.type", "adapter.type", "adapter.lora.alpha"):
        field = reader.get_field(key)
        assert field is not None, key
        part = field.parts[field.data[0]]
        meta[key] = bytes(part).decode() if key != "adapter.lora.alpha" else float(part[0])
    # ggml lists dimensions innermost first: reversed they read as numpy's.
    tensors = {t.name: np.array(t.data).reshape(tuple(reversed(t.shape))) for t in reader.tensors}
    return meta, tensors


@pytest.mark.parametrize("architecture", ["llama", "gemma3"])
def test_adapter_becomes_a_gguf_lora(tmp_path: Path, architecture: str) -> None:
    base = write_toy_base(tmp_path / "base.gguf", architecture)
    state = write_toy_adapter(tmp_path / "adapter")
    out = write_gguf_lora(tmp_path / "adapter", base, tmp_path / "adapter.gguf")

    header = read_base_gguf(base)
    assert (header.architecture, header.block_count, header.embedding_length) == (
        architecture,
        LAYERS,
        WIDTH,
    )
    assert (header.head_count, header.head_count_kv, header.vocab_size) == (HEADS, KV_HEADS, 64)
    assert header.shapes["blk.1.ffn_down.weight"] == (WIDTH, MLP)
    assert out == tmp_path / "adapter.gguf"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "adapter.gguf", "base.gguf"]
    meta, tensors = read_adapter_gguf(out)
    assert meta == {
        "general.architecture": architecture,
        "general.type": "adapter",
        "adapter.type": "lora",
        "adapter.lora.alpha": ALPHA,
    }
    expected_names = {
        f"blk.{b}.{t}.weight.lora_{ab}" for b in range(LAYERS) for t in PROJECTIONS.values()
        for ab in "ab"
    }  # fmt: skip
    assert set(tensors) == expected_names
    permuted = ARCHITECTURES[architecture].permutes_qk
    assert permuted == (architecture == "llama")
    for block in range(LAYERS):
        for module, (out_features, in_features) in SHAPES.items():
            peft = f"base_model.model.model.layers.{block}.{module}"
            name = f"blk.{block}.{PROJECTIONS[module]}.weight"
            a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
            assert a.dtype == b.dtype == np.float32
            assert a.shape == (RANK, in_features) and b.shape == (out_features, RANK)
            np.testing.assert_array_equal(a, state[f"{peft}.lora_A.weight"].numpy())
            b_peft = state[f"{peft}.lora_B.weight"].numpy()
            if permuted and module in ("self_attn.q_proj", "self_attn.k_proj"):
                heads = HEADS if module == "self_attn.q_proj" else KV_HEADS
                np.testing.assert_array_equal(b, _permute_rows(b_peft, heads))
                assert not np.array_equal(b, b_peft)
            else:
                np.testing.assert_array_equal(b, b_peft)


def test_mapping_is_gguf_py_s() -> None:
    """The module -> tensor table agrees with gguf-py's own name map for both architectures."""
    import gguf

    for architecture in ARCHITECTURES:
        arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == architecture)
        names = gguf.get_tensor_name_map(arch, 4)
        for module, tensor in PROJECTIONS.items():
            found = names.get_name(f"model.layers.3.{module}.weight", try_suffixes=(".weight",))
            assert found == f"blk.3.{tensor}.weight", (architecture, module)


def test_q_k_permutation_inverts_transformers_gguf_loader() -> None:
    """transformers un-permutes q and k when it loads a llama GGUF (what the embedded base's
    checkpoint went through); twin's permutation of lora_B rows must be its exact inverse."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    processor = LlamaTensorProcessor(config={"num_attention_heads": 9, "num_key_value_heads": 3})
    rows = np.arange(576 * 5, dtype=np.float32).reshape(576, 5)
    for heads in (9, 3):
        size = rows[: heads * 64]
        back = processor._reverse_permute_weights(_permute_rows(size, heads), heads, heads)
        np.testing.assert_array_equal(back, size)


def test_rslora_scale_goes_into_b(tmp_path: Path) -> None:
    base = write_toy_base(tmp_path / "base.gguf", "gemma3")
    state = write_toy_adapter(tmp_path / "adapter", use_rslora=True)
    _, tensors = read_adapter_gguf(write_gguf_lora(tmp_path / "adapter", base, tmp_path / "o"))
    b = tensors["blk.0.attn_v.weight.lora_b"]
    # llama.cpp multiplies by alpha / r; rsLoRA trained with alpha / sqrt(r).
    expected = state["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"].numpy()
    np.testing.assert_allclose(b * ALPHA / RANK, expected * ALPHA / RANK**0.5, rtol=1e-6)


def test_unfit_adapters_are_refused(tmp_path: Path) -> None:
    base = write_toy_base(tmp_path / "base.gguf", "llama")

    def refused(change: dict[str, torch.Tensor] | None = None, **adapter_keys: object) -> str:
        folder = tmp_path / f"a{len(list(tmp_path.iterdir()))}"
        state = write_toy_adapter(folder, **adapter_keys)
        if change is not None:
            state.update(change)
            save_file(state, str(folder / "adapter_model.safetensors"))
        with pytest.raises(AdapterUnfit) as err:
            write_gguf_lora(folder, base, folder / "adapter.gguf")
        assert not (folder / "adapter.gguf").exists()
        return str(err.value)

    key = "base_model.model.model.layers.1.mlp.up_proj"
    assert "do not fit" in refused({f"{key}.lora_B.weight": torch.zeros(MLP + 1, RANK)})
    assert "non-finite" in refused({f"{key}.lora_A.weight": torch.full((RANK, WIDTH), np.nan)})
    assert "2 layers" in refused(
        {"base_model.model.model.layers.2.mlp.up_proj.lora_A.weight": torch.zeros(RANK, WIDTH)}
    )
    embed = "base_model.model.model.embed_tokens.lora_A.weight"
    assert "attention and MLP" in refused({embed: torch.zeros(RANK, 64)})
    assert "DoRA" in refused(use_dora=True)
    (tmp_path / "other.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(TwinError, match="not a readable GGUF"):
        write_gguf_lora(tmp_path / "a1", tmp_path / "other.gguf", tmp_path / "x.gguf")
    phi = write_toy_base(tmp_path / "phi.gguf", "phi3")
    with pytest.raises(TwinError, match="'phi3' is not one twin converts"):
        write_gguf_lora(tmp_path / "a1", phi, tmp_path / "x.gguf")


@pytest.mark.parametrize(
    ("temperature", "top_p", "repetition_penalty", "top_k"),
    [(0.7, 0.9, 1.1, 50), (1.3, 1.0, 1.0, 50), (0.5, 0.5, 1.3, 0), (0.0, 0.9, 1.2, 50)],
)
def test_next_token_distribution_is_transformers_sampling(
    temperature: float, top_p: float, repetition_penalty: float, top_k: int
) -> None:
    """The llama.cpp engine samples from its logits exactly as transformers' generate does."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    from serving.llamacpp import next_token_distribution

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1000, generator=generator) * 4
    input_ids = torch.randint(0, 1000, (1, 300), generator=generator)
    seen = np.zeros(1000, dtype=bool)
    seen[input_ids[0].numpy()] = True
    generation = GenerationConfig(
        temperature=temperature, top_p=top_p, repetition_penalty=repetition_penalty
    )
    tokens, probabilities = next_token_distribution(logits[0].numpy(), seen, generation, top_k)

    steps: list = [RepetitionPenaltyLogitsProcessor(repetition_penalty)]
    if temperature > 0:
        steps += [TemperatureLogitsWarper(temperature)]
        steps += [TopKLogitsWarper(top_k)] if top_k else []
        steps += [TopPLogitsWarper(top_p)]
    scores = LogitsProcessorList(steps)(input_ids, logits.clone())[0]
    if temperature == 0:
        assert tokens.tolist() == [int(scores.argmax())]
        return
    ours = np.zeros(1000)
    ours[tokens] = probabilities
    np.testing.assert_allclose(ours, torch.softmax(scores.double(), -1).numpy(), atol=1e-6)
    assert (ours > 0).sum() <= (top_k or 1000)


# --- the real embedded SmolLM2 ---------------------------------------------------------------

MESSAGES = [
    *PROMPTS,
    "hey! are we still on for dinner tomorrow?",
    "can you send me the address again?",
]


def smollm2_config(folder: Path, engine: str, base: str = "smollm2-135m", gguf: str = "") -> Config:
    path = folder / f"{engine}.toml"
    path.write_text(
        f'[paths]\ndata_dir = "data"\n[model]\nbase = "{base}"\ncpu_dtype = "fp32"\n'
        "[train]\nmax_steps = 8\nbatch_size = 4\nlearning_rate = 1e-3\ncheckpoint_steps = 0\n"
        "max_seq_tokens = 128\nsample_replies = 0\n"
        "[eval]\non_train = false\nrequire_style_win = false\n"
        "[generation]\nmax_new_tokens = 16\ntemperature = 0.0\n"
        f'[serving]\nengine = "{engine}"\nthreads = 2\ngguf = "{gguf}"\n'
    )
    return load_config(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> Iterator[Config]:
    """A data dir with an adapter trained for a few steps on the real SmolLM2 (current)."""
    from trainer.train import train

    folder = tmp_path_factory.mktemp("llamacpp")
    config = smollm2_config(folder, "transformers")
    write_dataset(config.dataset_dir)
    result = train(config)
    assert result is not None and result.promoted
    yield config


SYSTEM = "You are Mira. Reply as Mira would."


def current(config: Config) -> str:
    from trainer.registry import current_version

    version = current_version(config.adapters_dir)
    assert version is not None
    return version


def conversations(system: str) -> list[list[ChatMessage]]:
    return [with_system_prompt(system, [{"role": "user", "content": m}]) for m in MESSAGES]


def first_tokens_agreeing(tokenizer: Any, ours: str, theirs: str, n: int = 16) -> int:
    """How many of the first `n` tokens two replies share, as the tokenizer reads them."""
    a = tokenizer(ours, add_special_tokens=False)["input_ids"][:n]
    b = tokenizer(theirs, add_special_tokens=False)["input_ids"][:n]
    differing = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
    return min(len(a), len(b)) if differing is None else differing


@pytest.mark.slow
def test_llamacpp_serves_what_transformers_serves(trained: Config) -> None:
    from serving.llamacpp import LlamaCppEngine
    from serving.twin import load_served_twin

    greedy = trained.generation  # temperature 0, 16 new tokens, repetition penalty 1.1
    folder = trained.adapters_dir / current(trained)
    engine = LlamaCppEngine(smollm2_config(trained.source.parent, "llama.cpp"))  # same data
    try:
        bare = engine.generate(conversations(SYSTEM), greedy)
        engine.swap(folder)
        assert engine.version == folder.name
        assert (folder / "adapter.gguf").exists()
        twin = engine.generate(conversations(SYSTEM), greedy)
        one_by_one = [engine.generate([c], greedy)[0] for c in conversations(SYSTEM)]
    finally:
        engine.close()
    # The adapter changes what llama.cpp says (it learned Mira's short replies).
    assert sum(a != b for a, b in zip(bare, twin, strict=True)) >= len(MESSAGES) // 2, (bare, twin)
    # Conversations decoded together (one llama.cpp sequence each) answer as they do alone.
    assert twin == one_by_one

    served = load_served_twin(trained, with_adapter=False)
    # One at a time: a batch would left-pad, and transformers' repetition penalty would then
    # also count the padding token (its EOS) against the padded rows.
    bare_hf = [served.engine.generate([c], greedy)[0] for c in conversations(SYSTEM)]
    served.engine.swap(folder)
    twin_hf = [served.engine.generate([c], greedy)[0] for c in conversations(SYSTEM)]
    served.engine.close()

    lines = []
    for what, ours, theirs in (("base", bare, bare_hf), ("twin", twin, twin_hf)):
        pairs = list(zip(ours, theirs, strict=True))
        same = sum(a == b for a, b in pairs)
        agreeing = [first_tokens_agreeing(served.tokenizer, a, b) for a, b in pairs]
        lines.append(f"{what}: {same}/{len(pairs)} identical, first 16 tokens agree {agreeing}")
        # Not every reply: llama.cpp computes with the GGUF's Q4_1 weights (Q8_0 embeddings)
        # and 8-bit activations in its quantized matmuls, transformers with those weights
        # dequantized to fp32 (the LoRA delta is fp32 on both sides). The logits differ a
        # little (see the next test), so where two tokens are nearly tied greedy decoding can
        # go either way, and the replies part from there. Measured: base 5/8 identical, the
        # other three parting after 14 of their 16 tokens; twin 7/8 identical (the twin's
        # replies are 1 to 7 tokens, Mira's; 6 or 7 of 8 from one training run to the next).
        assert same >= len(pairs) // 2, pairs
        if what == "base":  # long replies: most of their first 16 tokens agree
            assert sum(agreeing) >= 8 * len(pairs), pairs
    print("llama.cpp vs transformers, greedy:", *lines, sep="\n  ")


@pytest.mark.slow
def test_adapter_moves_llamacpp_logits_as_it_moves_transformers(
    trained: Config, tmp_path: Path
) -> None:
    """The sharpest check of the conversion: what the adapter changes in the next-token
    log-probabilities, llama.cpp against transformers. An adapter on q and k alone checks the
    RoPE permutation: with its rows left in transformers' order the changes do not correlate
    at all (measured: -0.3 to 0.1), with them permuted they do (0.88 to 0.92; less than the
    whole adapter's 0.99 because q/k's small change is nearer the quantization noise)."""
    from serving.llamacpp import LlamaCppEngine
    from serving.twin import load_served_twin

    folder = trained.adapters_dir / current(trained)
    qk_only = tmp_path / "20990101-000000"
    shutil.copytree(folder, qk_only)
    (qk_only / "adapter.gguf").unlink(missing_ok=True)
    state = load_file(str(qk_only / "adapter_model.safetensors"))
    for key in state:
        if key.endswith("lora_B.weight") and not key.endswith(
            ("q_proj.lora_B.weight", "k_proj.lora_B.weight")
        ):
            state[key] = torch.zeros_like(state[key])
    save_file(state, str(qk_only / "adapter_model.safetensors"))
    engine = LlamaCppEngine(smollm2_config(trained.source.parent, "llama.cpp"))
    prompts = [encode_prompt(engine.tokenizer, c) for c in conversations(SYSTEM)]

    def llamacpp() -> np.ndarray:  # the log-probabilities after each prompt
        rows = []
        for prompt in prompts:
            engine._llama.forget()
            rows.append(engine._llama.prefill([prompt])[1][0])
        return torch.log_softmax(torch.tensor(np.array(rows), dtype=torch.float64), -1).numpy()

    served = load_served_twin(trained, with_adapter=False)

    def transformers() -> np.ndarray:
        with torch.inference_mode():
            rows = [served.engine.model(torch.tensor([p])).logits[0, -1] for p in prompts]
        return torch.log_softmax(torch.stack(rows).double(), -1).numpy()

    base = (llamacpp(), transformers())
    for adapter, floor in ((folder, 0.97), (qk_only, 0.75)):
        engine.swap(adapter)
        served.engine.swap(adapter)
        changes = [
            twin - bare for twin, bare in zip((llamacpp(), transformers()), base, strict=True)
        ]
        for ours, theirs in zip(*changes, strict=True):
            assert np.corrcoef(ours, theirs)[0, 1] > floor, adapter.name
    engine.close()
    served.engine.close()


@pytest.mark.slow
def test_refused_adapters_leave_the_old_one_serving(trained: Config, tmp_path: Path) -> None:
    from serving.engine import AdapterRefused
    from serving.llamacpp import LlamaCppEngine

    version = current(trained)
    good = trained.adapters_dir / version
    greedy = GenerationConfig(max_new_tokens=12, temperature=0.0)
    engine = LlamaCppEngine(smollm2_config(trained.source.parent, "llama.cpp"))
    try:
        engine.swap(good)
        before = engine.generate(conversations("You are Mira."), greedy)

        def broken(name: str) -> Path:
            folder = tmp_path / name
            shutil.copytree(good, folder)
            (folder / "adapter.gguf").unlink(missing_ok=True)
            return folder

        key = "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"
        wrong_shape = broken("20990101-000001")
        state = load_file(str(wrong_shape / "adapter_model.safetensors"))
        state[key] = torch.zeros(state[key].shape[0] * 3, state[key].shape[1])  # q's size
        save_file(state, str(wrong_shape / "adapter_model.safetensors"))
        nan = broken("20990101-000002")
        state = load_file(str(nan / "adapter_model.safetensors"))
        state[key][0, 0] = float("nan")
        save_file(state, str(nan / "adapter_model.safetensors"))
        other_base = broken("20990101-000003")
        adapter_config = json.loads((other_base / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-360M-Instruct"
        (other_base / "adapter_config.json").write_text(json.dumps(adapter_config))
        unreadable = broken("20990101-000004")
        (unreadable / "adapter_model.safetensors").write_bytes(b"not safetensors")

        for folder, why in (
            (wrong_shape, "does not fit"),
            (nan, "non-finite"),
            (other_base, "SmolLM2-360M"),
            (unreadable, "cannot be read"),
        ):
            with pytest.raises(AdapterRefused, match=why):
                engine.swap(folder)
            assert engine.version == version
            assert not (folder / "adapter.gguf").exists()
        assert engine.generate(conversations("You are Mira."), greedy) == before

        # A damaged conversion left beside a good adapter is made again, not served.
        again = broken("20990101-000005")
        (again / "adapter.gguf").write_bytes(b"GGUF truncated")
        engine.swap(again)
        assert engine.version == again.name
        assert engine.generate(conversations("You are Mira."), greedy) == before
    finally:
        engine.close()


@pytest.mark.slow
def test_base_gguf_must_be_the_training_base(trained: Config, smollm2: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from serving.llamacpp import LlamaCppEngine, check_same_model
    from trainer.embedded import EMBEDDED, gguf_file

    gguf = read_base_gguf(gguf_file(EMBEDDED["smollm2-135m"], trained.model_cache))
    check_same_model(gguf, str(smollm2))
    # SmolLM2's GGUF holds q and k in llama.cpp's order: the transformers checkpoint (what
    # twin trains on), permuted as the adapters' lora_B rows are, is the same weights.
    reader = GGUFReader(gguf.path)  # gguf-py's reader (slow: seconds) agrees with twin's
    assert gguf.shapes == {t.name: tuple(int(d) for d in reversed(t.shape)) for t in reader.tensors}
    tokens = reader.get_field("tokenizer.ggml.tokens")
    assert tokens is not None and gguf.vocab_size == len(tokens.data) == 49152
    weights = load_file(str(smollm2 / "model.safetensors"))
    for name, hf, heads in (("attn_q", "q_proj", 9), ("attn_k", "k_proj", 3)):
        tensor = next(t for t in reader.tensors if t.name == f"blk.0.{name}.weight")
        ours = dequantize(tensor.data, tensor.tensor_type)
        theirs = weights[f"model.layers.0.self_attn.{hf}.weight"].numpy()
        np.testing.assert_allclose(ours, _permute_rows(theirs, heads), atol=1e-6)
        assert not np.allclose(ours, theirs, atol=1e-3)

    folder = trained.source.parent
    # The base as a local folder: not embedded, so [serving] gguf must say where its GGUF is.
    with pytest.raises(TwinError, match=r"needs \[serving\] gguf"):
        LlamaCppEngine(smollm2_config(folder, "llama.cpp", base=str(smollm2)))
    toy = write_toy_base(folder / "toy.gguf", "llama")
    with pytest.raises(TwinError, match="layers 2 vs 30, embedding width 32 vs 576"):
        LlamaCppEngine(smollm2_config(folder, "llama.cpp", base=str(smollm2), gguf=str(toy)))
