"""The GPU paths of the trainer, held on the CPU: what a CUDA machine would be asked to do
(precision, autocast, device_map per rank, gradient checkpointing), captured at the calls
into torch, transformers and peft, and the refusal of a GPU-sized base without a GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.gpu import QWEN25_7B
from tests.trainer.helpers import make_config
from trainer.fit import FitPlan, add_lora, fit
from trainer.metrics import DatasetInfo
from trainer.model import LoadPlan, check_cpu_can_train, load_base, load_base_model, load_plan
from trainer.train import train
from twin.core.config import config_from_dict
from twin.core.errors import TwinError
from twin.core.loading import load_config

FP32, BF16, FP16 = torch.float32, torch.bfloat16, torch.float16


class Captured(Exception):
    """Raised by a stand-in once it has recorded its arguments: nothing runs past the call."""


@pytest.mark.parametrize(
    ("plan", "enabled"),
    [
        (LoadPlan("cpu", FP32, quantized=False), False),
        (LoadPlan("cpu", BF16, quantized=False), True),
        (LoadPlan("cpu", BF16, quantized=True), True),
        (LoadPlan("cuda", FP32, quantized=False), False),
        (LoadPlan("cuda", BF16, quantized=False), True),
        (LoadPlan("cuda", FP16, quantized=False), True),
        (LoadPlan("cuda", BF16, quantized=True), True),
        (LoadPlan("cuda", FP16, quantized=True), True),
    ],
)
def test_autocast_is_on_exactly_for_bf16_fp16_and_4bit(
    monkeypatch: pytest.MonkeyPatch, plan: LoadPlan, enabled: bool
) -> None:
    asked: list[tuple[Any, ...]] = []

    def autocast(device: str, *, dtype: torch.dtype, enabled: bool) -> None:
        asked.append((device, dtype, enabled))

    # Captured rather than entered: this torch has no CUDA, and would disable a CUDA autocast.
    monkeypatch.setattr(torch, "autocast", autocast)
    plan.autocast()
    assert asked == [(plan.device, plan.dtype, enabled)]
    assert plan.mixed is enabled


def test_heldout_loss_of_base_and_twin_run_under_trainings_autocast(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.fit
    import trainer.loss

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a bf16 plan on the CPU
    config = make_config(tmp_path, tiny_base, max_steps=2)
    assert config.source is not None
    text = config.source.read_text().replace("[model]\n", '[model]\ncpu_dtype = "bf16"\n')
    config.source.write_text(text)
    config = load_config(config.source)
    seen: dict[str, set[tuple[bool, torch.dtype]]] = {"heldout": set(), "training": set()}
    measuring: list[str] = []
    calls = {"heldout": 0, "training": 0}

    def recording(what: str, real: Any) -> Any:
        def reply_loss_sum(model: Any, batch: Any) -> Any:
            calls[what] += 1
            measuring.append(what)
            try:
                return real(model, batch)
            finally:
                measuring.pop()

        return reply_loss_sum

    def inside_the_model(module: torch.nn.Module, args: Any) -> None:
        # accelerate wraps the model's forward in its autocast: look from inside the model.
        if measuring and type(module).__name__ == "LlamaDecoderLayer":
            state = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
            seen[measuring[-1]].add(state)

    # heldout_loss calls trainer.loss's own; the fit loop the name trainer.fit imported.
    monkeypatch.setattr(
        trainer.loss, "reply_loss_sum", recording("heldout", trainer.loss.reply_loss_sum)
    )
    monkeypatch.setattr(
        trainer.fit, "reply_loss_sum", recording("training", trainer.fit.reply_loss_sum)
    )
    hook = torch.nn.modules.module.register_module_forward_pre_hook(inside_the_model)
    try:
        result = train(config)
    finally:
        hook.remove()
    assert result is not None and result.metrics.plan == "cpu, bfloat16"
    assert seen["training"] == {(True, BF16)}  # accelerate's bf16 mixed precision
    assert seen["heldout"] == {(True, BF16)}  # the base's and the twin's alike
    assert calls == {"heldout": 2 + 2, "training": 2}  # 6 held-out examples in batches of 4


def test_gpu_without_bf16_trains_in_fp16(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.fit

    # A pre-Ampere GPU (a T4, a V100): no bf16. Asking transformers for bf16 there raises.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    config = make_config(tmp_path, tiny_base)
    plan = load_plan(config)
    assert plan == LoadPlan("cuda", FP16, quantized=True)  # quantization "auto": 4-bit on a GPU
    asked: dict[str, Any] = {}

    def training_arguments(**kwargs: Any) -> None:
        asked.update(kwargs)
        raise Captured

    monkeypatch.setattr(trainer.fit, "TrainingArguments", training_arguments)
    fit_plan = FitPlan(4, DatasetInfo("0" * 64, 24, 6), False, tmp_path / "checkpoints")
    with pytest.raises(Captured):
        fit(None, None, [], config, plan, fit_plan)
    assert asked["fp16"] is True and asked["bf16"] is False and asked["use_cpu"] is False
    plain = LoadPlan("cuda", BF16, quantized=False)
    with pytest.raises(Captured):
        fit(None, None, [], config, plain, fit_plan)
    assert asked["bf16"] is True and asked["fp16"] is False


# Qwen2.5-7B's config.json: its published shapes, written once (bench.gpu builds the model).
QWEN_7B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", **QWEN25_7B}


def test_a_7b_base_is_refused_on_a_cpu_only_torch(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "qwen2.5-7b"  # its config alone: nothing loads weights to decide
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN_7B))
    cpu = LoadPlan("cpu", FP32, quantized=False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(TwinError) as refused:
        check_cpu_can_train(str(folder), cpu)
    message = str(refused.value)
    assert "\n" not in message
    assert "about 7.7B parameters" in message and "CPU-only build" in message, message
    # Same base, a CUDA torch that sees no GPU: the other cause, named as such.
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(TwinError, match="sees no GPU"):
        check_cpu_can_train(str(folder), cpu)
    check_cpu_can_train(str(folder), LoadPlan("cuda", BF16, quantized=True))  # a GPU: fine
    check_cpu_can_train(str(tiny_base), cpu)  # a small base trains on the CPU


class FakeModel:
    def __init__(self) -> None:
        self.moved_to: list[Any] = []

    def to(self, device: Any) -> FakeModel:
        self.moved_to.append(device)
        return self

    def eval(self) -> FakeModel:
        return self


def capture_from_pretrained(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    asked: dict[str, Any] = {}

    def from_pretrained(checkpoint: str, **kwargs: Any) -> FakeModel:
        asked.clear()
        asked.update(kwargs, checkpoint=checkpoint)
        asked["model"] = FakeModel()
        return asked["model"]

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    return asked


def test_each_rank_loads_its_base_onto_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = capture_from_pretrained(monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", "1")  # the second process of `torchrun --nproc_per_node 2`
    load_base_model("some/base", LoadPlan("cuda", BF16, quantized=True))
    assert asked["device_map"] == {"": 1}
    q = asked["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == BF16 and asked["dtype"] == BF16
    load_base_model("some/base", LoadPlan("cuda", BF16, quantized=False))
    assert "device_map" not in asked and asked["model"].moved_to == ["cuda:1"]
    load_base_model("some/base", LoadPlan("cpu", BF16, quantized=True))
    assert asked["device_map"] == {"": "cpu"}
    monkeypatch.delenv("LOCAL_RANK")  # one process: GPU 0
    load_base_model("some/base", LoadPlan("cuda", FP16, quantized=True))
    assert asked["device_map"] == {"": 0}


def test_add_lora_checkpoints_without_reentrant_on_a_gpu(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import peft

    config = make_config(tmp_path, tiny_base)
    asked: dict[str, Any] = {}

    def prepare_model_for_kbit_training(model: Any, **kwargs: Any) -> Any:
        asked.update(kwargs)
        return model

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", prepare_model_for_kbit_training)
    loaded = load_base(config)
    model = add_lora(loaded.model, config, LoadPlan("cuda", BF16, quantized=True), loaded.tokenizer)
    assert asked == {
        "use_gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
    }
    assert any("lora_A" in name for name, _ in model.named_parameters())

    # A bf16 base on a GPU checkpoints its activations too, the same way.
    loaded = load_base(config)
    base = loaded.model
    checkpointing: dict[str, Any] = {}
    monkeypatch.setattr(
        base, "gradient_checkpointing_enable", lambda **kwargs: checkpointing.update(kwargs)
    )
    add_lora(base, config, LoadPlan("cuda", BF16, quantized=False), loaded.tokenizer)
    assert checkpointing == {"gradient_checkpointing_kwargs": {"use_reentrant": False}}


def test_cpu_plan_never_asks_for_4bit_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = load_plan(config_from_dict({"model": {"quantization": "auto", "cpu_dtype": "fp32"}}))
    nf4 = load_plan(config_from_dict({"model": {"quantization": "nf4", "cpu_dtype": "fp32"}}))
    assert auto == LoadPlan("cpu", FP32, quantized=False)
    assert nf4 == LoadPlan("cpu", BF16, quantized=True)  # bitsandbytes' CPU kernels: bf16
