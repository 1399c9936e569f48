"""QLoRA on the CPU: `[model] quantization = "nf4"` through bitsandbytes' CPU backend, from
loading the base in 4 bits to serving the registered adapter (kept unmerged on 4-bit)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from serving.transformers import TransformersEngine
from tests.trainer.helpers import make_config
from trainer.data import collator, encode_examples, read_dataset
from trainer.fit import add_lora
from trainer.loss import heldout_loss, reply_loss_sum
from trainer.model import LoadPlan, keep_4bit_trainable, load_base, load_plan, load_tokenizer
from trainer.train import train
from twin.core.config import Config
from twin.core.conversation import with_system_prompt
from twin.core.loading import load_config

# bitsandbytes is a dependency on Linux x86-64 only (pyproject.toml); its CPU backend does NF4.
bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes installs on Linux x86-64 only")

# The tiny Llama's adapted linears: q, k, v, o, gate, up, down in each of its 2 layers. The
# embeddings and the (tied) head stay in bf16, as bitsandbytes leaves them.
QUANTIZED_LINEARS = 14


@pytest.fixture(autouse=True)
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CPU path even where a GPU is visible (there 4-bit would load onto it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def nf4_config(tmp_path: Path, base: Path) -> Config:
    # 6 steps: a 4-bit step is ~2 s here (bitsandbytes dequantizes each layer on every pass).
    config = make_config(tmp_path, base, max_steps=6)
    assert config.source is not None
    text = config.source.read_text().replace("[model]\n", '[model]\nquantization = "nf4"\n')
    config.source.write_text(text)
    return load_config(config.source)


def linear4bit(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def test_nf4_base_is_really_4_bit(tmp_path: Path, tiny_base: Path) -> None:
    config = nf4_config(tmp_path, tiny_base)
    plan = load_plan(config)
    assert plan == LoadPlan("cpu", torch.bfloat16, quantized=True)
    model = load_base(config).model
    layers = linear4bit(model)
    assert len(layers) == QUANTIZED_LINEARS
    original = load_file(tiny_base / "model.safetensors")
    for name, module in model.named_modules():
        if module not in layers:
            continue
        weight = module.weight
        state = weight.quant_state
        # Two 4-bit codes per byte, NF4 with double-quantized block scales: not fp32 in disguise.
        assert weight.dtype == torch.uint8 and state.quant_type == "nf4" and state.nested
        assert weight.numel() * 2 == module.in_features * module.out_features
        restored = bnb.functional.dequantize_4bit(weight.data, state).float()
        exact = original[f"{name}.weight"].float()
        error = float((restored - exact).norm() / exact.norm())
        assert 0.01 < error < 0.2, (name, error)  # NF4's rounding, measured ~0.09 here


def test_4bit_base_still_backpropagates_after_its_heldout_loss(
    tmp_path: Path, tiny_base: Path
) -> None:
    """The recipe measures the base before it adds LoRA. On a CPU with AVX512-BF16, that
    eval-mode pass made bitsandbytes repack the 4-bit weights for an inference kernel without
    a backward, and training then got no gradient through any 4-bit layer (the residual
    stream and the LoRA branches alone still moved the loss)."""
    config = nf4_config(tmp_path, tiny_base)
    examples = encode_examples(
        load_tokenizer(str(tiny_base)), read_dataset(config.dataset_dir).train[:4], 128
    )

    def measured_then_adapted(keep: bool) -> torch.nn.Module:
        base = load_base(config)
        if keep:
            keep_4bit_trainable(base.model)  # what trainer.train does before measuring
        heldout_loss(base.model, base.tokenizer, examples, 4, base.plan)
        return add_lora(base.model, config, base.plan, base.tokenizer)

    if getattr(bnb.functional, "has_avx512bf16", lambda: False)():
        # Where the repacking happens, training such a base is refused, not done silently.
        with pytest.raises(RuntimeError, match="repacked for inference"):
            measured_then_adapted(keep=False)
    model = measured_then_adapted(keep=True)
    model.train()
    batch = collator(load_tokenizer(str(tiny_base)))(examples)
    with load_plan(config).autocast():
        loss, n = reply_loss_sum(model, batch)
    (loss / n).backward()
    # B is zero at the start, so q, k, v, gate and up get a gradient only through the 4-bit
    # weights of the o_proj and down_proj above them.
    lora_b = {k: p.grad for k, p in model.named_parameters() if "lora_B" in k}
    assert len(lora_b) == QUANTIZED_LINEARS
    no_gradient = [k for k, g in lora_b.items() if g is None or not g.abs().max() > 0]
    assert not no_gradient, no_gradient


def test_qlora_on_cpu_trains_registers_and_serves(tmp_path: Path, tiny_base: Path) -> None:
    from serving.twin import load_served_twin

    config = nf4_config(tmp_path, tiny_base)
    result = train(config)
    assert result is not None
    m = result.metrics
    assert m.plan == "cpu, 4-bit NF4 (QLoRA), bfloat16 compute"
    assert result.promoted and m.eval_loss < m.base_eval_loss - 0.1, result.line()

    # Every adapted layer learned: LoRA's B starts at zero and moves only with a gradient.
    weights = load_file(result.path / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert len(lora_b) == QUANTIZED_LINEARS
    untrained = [k for k, v in lora_b.items() if not v.abs().max() > 0]
    assert not untrained, untrained

    served = load_served_twin(config)
    engine = served.engine
    assert isinstance(engine, TransformersEngine)
    model = engine.model
    assert served.version == result.version
    assert len(linear4bit(model)) == QUANTIZED_LINEARS
    assert not engine.merged  # merging into 4-bit weights would round the deltas away
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert len(lora) == 2 * QUANTIZED_LINEARS
    assert not any(p.requires_grad for p in lora)  # set_adapter(..., inference_mode=True)

    # The adapter is applied: the twin's logits are not the base's.
    probe = torch.tensor([served.tokenizer("Coffee later?")["input_ids"]])
    with torch.inference_mode():
        twin = model(input_ids=probe).logits.float()
        with engine.without_adapter():
            bare = model(input_ids=probe).logits.float()
    assert (twin - bare).abs().max() > 1e-3
    chat = with_system_prompt("You are Mira.", [{"role": "user", "content": "Coffee later?"}])
    (reply,) = engine.generate([chat], config.generation)
    assert isinstance(reply, str)
