"""The base model: where it comes from, and how it is loaded on this machine.

`[model] base` is an embedded model (trainer.embedded: "smollm2-135m", "gemma3-270m"), a local
transformers checkpoint folder, or a Hugging Face id. `load_base` is the one way twin loads
it: training, evaluation, the canary test and serving alike.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.embedded import EMBEDDED, embedded_checkpoint
from twin.core.config import Config
from twin.core.errors import TwinError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadPlan:
    """How the base is loaded here: device, dtype and whether it is 4-bit (QLoRA).

    `dtype` is the compute precision: the weights' dtype, or with 4-bit the dtype the
    quantized matmuls, LoRA, attention and the head compute in (under autocast).
    """

    device: str  # "cuda" or "cpu"
    dtype: torch.dtype
    quantized: bool

    @property
    def mixed(self) -> bool:
        """Whether training runs under autocast (anything but plain fp32)."""
        return self.quantized or self.dtype != torch.float32

    def autocast(self) -> Any:
        """The autocast training runs under (accelerate's, for bf16/fp16 mixed precision):
        held-out losses are measured under it too, so base and twin compare alike."""
        return torch.autocast(self.device, dtype=self.dtype, enabled=self.mixed)

    def describe(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        precision = f"4-bit NF4 (QLoRA), {dtype} compute" if self.quantized else dtype
        return f"{self.device}, {precision}"


def base_checkpoint(config: Config) -> str:
    """What to give `from_pretrained`: the converted embedded model, a local folder, or a
    Hugging Face id as written."""
    base = config.model.base
    if base in EMBEDDED:
        return str(embedded_checkpoint(base, config.model_cache))
    path = Path(base).expanduser()
    if not path.is_absolute() and config.source is not None:
        path = config.source.resolve().parent / path
    if path.exists():
        if not (path / "config.json").exists():
            raise TwinError(f"[model] base {base!r}: folder has no config.json")
        return str(path)
    return base  # a hub id: transformers downloads it (needs internet the first time)


def load_plan(config: Config) -> LoadPlan:
    """Pick device, dtype and quantization for this machine and config."""
    if torch.cuda.is_available():
        quantized = config.model.quantization in ("auto", "nf4")
        # fp16 where the GPU has no bf16 (pre-Ampere): forcing bf16 there raises.
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return LoadPlan("cuda", dtype, quantized)
    cpu_bf16 = config.model.cpu_dtype == "bf16" or (
        config.model.cpu_dtype == "auto" and _cpu_has_native_bf16()
    )
    quantized = config.model.quantization == "nf4"
    # bitsandbytes' CPU 4-bit kernels compute in bf16.
    dtype = torch.bfloat16 if cpu_bf16 or quantized else torch.float32
    return LoadPlan("cpu", dtype, quantized)


# A base this large trains for days on a CPU: a CPU-only torch on a GPU machine (the usual
# cause) must be an error, not a silent week of fp32.
CPU_PARAMETER_LIMIT = 3e9


def check_cpu_can_train(checkpoint: str, plan: LoadPlan) -> None:
    """Refuse a base too big for a CPU when no GPU is usable; say why and what to do."""
    if plan.device != "cpu":
        return
    parameters = estimated_parameters(checkpoint)
    if parameters is None or parameters < CPU_PARAMETER_LIMIT:
        return
    cuda = torch.version.cuda
    reason = (
        "this torch is a CPU-only build (torch.version.cuda is None): install a CUDA build"
        if cuda is None
        else "torch has CUDA but sees no GPU (check the driver and CUDA_VISIBLE_DEVICES)"
    )
    raise TwinError(
        f"[model] base has about {parameters / 1e9:.1f}B parameters and no GPU is usable: "
        f"{reason}, or pick a smaller base for CPU training"
    )


def check_not_sharded() -> None:
    """Refuse FSDP and DeepSpeed ZeRO-3 (`accelerate launch` with such a config sets these
    variables): they shard the base's weights across the GPUs, while the recipe measures the
    base before training and the twin after it, and saves the adapter, in the main process
    alone, which would hold only its shard: the run would fail once training is done."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        sharding = "FSDP"
    elif os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true" and _zero_stage() == 3:
        sharding = "DeepSpeed ZeRO-3"
    else:
        return
    raise TwinError(
        f"{sharding} shards the base across the GPUs, and twin evaluates and saves the adapter "
        "in the main process alone: launch with torchrun or a multi-GPU (DDP) accelerate "
        'config, a whole base per GPU ([model] quantization = "nf4" makes a big one fit); '
        "see docs/gpu.md"
    )


def _zero_stage() -> int | None:
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if stage is None and (file := os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")):
        try:
            stage = json.loads(Path(file).read_text())["zero_optimization"]["stage"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        return int(stage) if stage is not None else None
    except ValueError:
        return None


def estimated_parameters(checkpoint: str) -> float | None:
    """Parameters of a decoder from its config alone (no weights loaded); None if unknown."""
    from transformers import AutoConfig

    try:
        c = AutoConfig.from_pretrained(checkpoint)
    except (OSError, ValueError):
        return None
    c = getattr(c, "text_config", c)
    hidden, layers, vocab = (
        getattr(c, k, None) for k in ("hidden_size", "num_hidden_layers", "vocab_size")
    )
    if not (hidden and layers and vocab):
        return None
    intermediate = getattr(c, "intermediate_size", None) or 4 * hidden
    return float(layers * (4 * hidden * hidden + 3 * hidden * intermediate) + vocab * hidden)


def _cpu_has_native_bf16() -> bool:
    """bf16 only pays on CPUs with AMX tiles (Sapphire Rapids and later). Measured here:
    without AVX512-BF16 a bf16 step took 25x an fp32 one; with AVX512-BF16 but no AMX, bf16
    matmuls ran at half the fp32 rate (180 vs 342 GFLOP/s) and a LoRA step was 1.3x slower."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


@dataclass
class Base:
    """The base model loaded for this machine, with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    checkpoint: str  # as given to from_pretrained: a folder, or a hub id
    plan: LoadPlan


def load_base(config: Config) -> Base:
    """THE way twin loads its base: training, evaluation, the canary test and serving alike."""
    checkpoint = base_checkpoint(config)
    plan = load_plan(config)
    tokenizer = load_tokenizer(checkpoint)
    return Base(load_base_model(checkpoint, plan), tokenizer, checkpoint, plan)


def local_rank() -> int:
    """This process's GPU under torchrun / accelerate launch (0 when not distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def load_tokenizer(checkpoint: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(checkpoint: str, plan: LoadPlan) -> Any:
    """The base model per `plan`, in eval mode, on its device."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": plan.dtype}
    if plan.quantized:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=plan.dtype,
            bnb_4bit_use_double_quant=True,
        )
        # Under torchrun each rank loads onto its own GPU, not all onto GPU 0.
        kwargs["device_map"] = {"": local_rank()} if plan.device == "cuda" else {"": "cpu"}
    model: Any = AutoModelForCausalLM.from_pretrained(checkpoint, **kwargs)
    if not plan.quantized:
        model.to(f"cuda:{local_rank()}" if plan.device == "cuda" else "cpu")
    model.eval()
    return model


def keep_4bit_trainable(model: Any) -> None:
    """Keep a 4-bit base that is about to be trained in the layout backprop works with.

    On a CPU with AVX512-BF16, bitsandbytes (0.50) re-lays a 4-bit layer's weights for its
    fast inference kernel the first time the layer runs in eval mode without gradients (the
    base's held-out loss does), and that kernel has no backward: trained afterwards, every
    gradient through the frozen 4-bit weights was dropped and only the last layer's LoRA
    learned (every other lora_B gradient was exactly 0). Serving keeps the fast kernel.
    """
    for name, module in model.named_modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            raise RuntimeError(
                f"{name} was repacked for inference before training: call this first"
            )
