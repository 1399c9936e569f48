"""Benchmark: QLoRA training and memory-guided replies at Qwen2.5-7B's size, on one GPU.

Nothing comes from a hub. A model with Qwen2.5-7B's published shapes (`QWEN25_7B`) is made
from its config with random weights and saved as a local checkpoint, so that twin loads it
exactly as it loads any base (trainer.model.load_base_model: on CUDA 4-bit NF4 with double
quantization and bf16 compute, the QLoRA path of `twin train`). What a step or a token costs
does not depend on the weights' values. Then, on that base:
- training: twin's own LoRA setup (trainer.fit.add_lora: `[lora]` r=16 on every linear
  layer, gradient checkpointing on CUDA) and fit loop (trainer.fit.fit: the HF Trainer with
  twin's reply-token loss), on batches of random token ids, every token labelled; warm-up
  steps first, then the timed steps: tokens/s and peak GPU memory, beside two published
  figures to read them against (`ANCHORS`);
- replies: that adapter served by twin's transformers engine (the base loaded afresh, as
  `twin serve` loads it; on a 4-bit base the adapter stays unmerged), one prompt of about
  600 tokens whose newest message carries a memory block, greedy, the same number of new
  tokens decoded plainly and with memory-guided decoding (its prompt without the block as a
  second row, trainer.guidance): seconds, tokens/s, and guided / plain.

The full size writes a 15 GB checkpoint under $TMPDIR and is sized for under 10 minutes on
one GPU. --tiny is the same code at tiny sizes, for CI: on a machine without CUDA it runs on
the CPU in the precision `twin train` picks there, unquantized (`"quantized": false`). 4-bit
needs bitsandbytes, which twin requires on Linux x86-64 only (`pip install bitsandbytes`
elsewhere); `--quantization nf4` also runs the 4-bit path on the CPU, through bitsandbytes'
CPU backend.

    .venv/bin/python -m bench.gpu [--tiny] [--quantization auto|nf4|none] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bench import emit

if TYPE_CHECKING:  # the model libraries load inside the steps that need them (see unavailable)
    from trainer.model import LoadPlan
    from twin.core.config import Config
    from twin.core.conversation import ChatMessage

# Qwen2.5-7B's published shapes (Qwen/Qwen2.5-7B-Instruct's config.json), written out here so
# that nothing is fetched.
QWEN25_7B: dict[str, Any] = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "rope_theta": 1e6,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}

# Training tokens/s of 4-bit QLoRA of a 7B-class model on one GPU, quoted as they were given
# when this benchmark was asked for: Hugging Face transformers + bitsandbytes on an A100, and
# Unsloth. Their data, sequence lengths, batches and GPUs are not this run's: a scale to read
# ours against, not a same-run comparison.
ANCHORS = {"hf_qlora_4bit_a100": 2415.0, "unsloth": 3726.0}

SYSTEM = "You are Mira. Reply as Mira would: short, lowercase, in her own words."
QUESTION = "wait, what was that place you kept going to last spring? and what did you get there?"
# What the memory block recalls, cycled until the prompt is long enough.
RECALLED = [
    ("where do you get coffee these days", "the little place by the canal, they do a cardamom bun"),
    ("any plans for saturday", "climbing in the morning then probably the cafe again lol"),
    ("did you try the new menu", "yes!! the mint green matcha thing, weirdly good"),
    ("how's pixel", "asleep on my keyboard as usual, she says hi"),
    ("are you still reading that book", "almost done, the ending is dragging tbh"),
]


@dataclass(frozen=True)
class Sizes:
    shape: dict[str, Any]  # Qwen2Config values
    seq_tokens: int  # tokens per training sequence
    batch: int  # sequences per step
    warmup_steps: int
    timed_steps: int
    prompt_tokens: int  # the reply's prompt, memory block included, at least this long
    new_tokens: int
    rounds: int  # plain and guided replies, alternating; each timed by its fastest round


FULL = Sizes(
    QWEN25_7B,
    seq_tokens=1024,
    batch=4,
    warmup_steps=3,
    timed_steps=10,
    prompt_tokens=600,
    new_tokens=64,
    rounds=3,
)
# The vocabulary must hold the ids of the tokenizer (SmolLM2's 49,152; see write_random_base).
TINY = Sizes(
    {
        **QWEN25_7B,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 49152,
        "max_position_embeddings": 2048,
    },
    seq_tokens=64,
    batch=2,
    warmup_steps=1,
    timed_steps=2,
    prompt_tokens=120,
    new_tokens=8,
    rounds=1,
)


def unavailable(quantization: str, *, cpu_ok: bool) -> str | None:
    """Why the benchmark cannot run here (one line for the user), or None. Cheap (no model
    library is imported), so `python -m bench --gpu` can refuse before it starts anything."""
    if not cpu_ok and not torch.cuda.is_available():
        build = " (this torch is a CPU-only build)" if torch.version.cuda is None else ""
        return f"no GPU is present: torch sees no CUDA device{build}; nothing was measured"
    if plan_for(quantization).quantized and importlib.util.find_spec("bitsandbytes") is None:
        return "4-bit NF4 needs bitsandbytes, which is not installed: pip install bitsandbytes"
    return None


def plan_for(quantization: str) -> LoadPlan:
    """How twin would load a base here with `[model] quantization = quantization`."""
    from trainer.model import load_plan
    from twin.core.config import config_from_dict

    return load_plan(config_from_dict({"model": {"quantization": quantization}}))


def bench_config(folder: Path, base: Path, sizes: Sizes, quantization: str) -> Config:
    """twin's config for a run on `base`: the default `[lora]`, `[train]` batch and no
    checkpoints (a checkpoint of a 7B's adapter every few steps would be timed too)."""
    from twin.core.config import config_from_dict

    return config_from_dict(
        {
            "paths": {"data_dir": str(folder / "data")},
            "model": {"base": str(base), "quantization": quantization},
            "train": {"batch_size": sizes.batch, "grad_accumulation": 1, "checkpoint_steps": 0},
        }
    )


def write_random_base(folder: Path, shape: dict[str, Any], device: str) -> int:
    """A checkpoint in `folder`: Qwen2 at `shape` with random weights in bf16 (as Qwen2.5 is
    published), made on `device` (a 7B initialises in seconds on a GPU, minutes on a CPU);
    returns its parameter count.

    The tokenizer is the embedded SmolLM2's (read from its GGUF, offline): Qwen2.5's own is
    on the hub only, SmolLM2's uses the same ChatML turns, and its ids all fall inside the
    model's vocabulary. The output head's rows of the end-of-turn tokens are zero, so their
    logit is 0 while a random vocabulary always has larger ones: greedy decoding never ends a
    reply, and both decodings produce exactly the tokens asked for through twin's own paths.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    from trainer.embedded import EMBEDDED, gguf_file
    from trainer.generation import stop_tokens
    from twin.core.config import default_model_cache

    gguf = gguf_file(EMBEDDED["smollm2-135m"], default_model_cache())
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if len(tokenizer) > shape["vocab_size"]:
        raise ValueError(f"vocab_size {shape['vocab_size']} < the tokenizer's {len(tokenizer)}")
    values = {k: v for k, v in shape.items() if k != "rope_theta"}
    config = Qwen2Config(
        **values,
        rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        model.get_output_embeddings().weight[stop_tokens(tokenizer)] = 0
    parameters = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    release_memory()
    return parameters


def random_examples(vocab: int, seq_tokens: int, n: int) -> list[dict[str, list[int]]]:
    """`n` sequences of random token ids, every token labelled: the loss (and the output
    head) then runs at every position, as in plain causal-LM fine-tuning, so the figure
    depends on no reply share of our choosing. twin's own examples label only the owner's
    replies and skip the head elsewhere (trainer.loss): they train faster than this."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (n, seq_tokens), generator=generator).tolist()
    return [{"input_ids": row, "labels": row} for row in ids]


def measure_training(config: Config, sizes: Sizes, adapter: Path) -> dict[str, Any]:
    """Warm-up steps, then timed steps, of twin's LoRA fit on the base; the adapter is saved
    to `adapter` for the replies."""
    from trainer.fit import FitPlan, add_lora, fit
    from trainer.metrics import DatasetInfo
    from trainer.model import load_base

    base = load_base(config)
    model = add_lora(base.model, config, base.plan, base.tokenizer)
    vocab = base.model.config.vocab_size
    # Two fit runs on the one model: the first pays for CUDA's and bitsandbytes' first calls
    # and the allocator's growth; only the second is reported. Its peak memory counts from
    # its own start (fit resets it), with the model and its optimizer state held.
    runs = []
    for steps in (sizes.warmup_steps, sizes.timed_steps):
        examples = random_examples(vocab, sizes.seq_tokens, sizes.batch * steps)
        plan = FitPlan(
            steps, DatasetInfo("random", len(examples), 0), False, config.data_dir / "checkpoints"
        )
        runs.append(fit(model, base.tokenizer, examples, config, base.plan, plan, progress=False))
    timed = runs[-1]
    device = base.plan.device
    lora = model.peft_config["default"]
    model.save_pretrained(adapter)
    checkpointing = bool(model.get_base_model().is_gradient_checkpointing)
    del model, base
    release_memory()
    return {
        "seq_tokens": sizes.seq_tokens,
        "batch": sizes.batch,
        "warmup_steps": sizes.warmup_steps,
        "timed_steps": timed.steps,
        "tokens": timed.train_tokens,
        "seconds": timed.train_seconds,
        "tokens_per_s": timed.tokens_per_s,
        "seconds_per_step": timed.seconds_per_step,
        "peak_memory_mb": timed.peak_memory_mb,
        "peak_memory_of": "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS",
        "train_loss": timed.train_loss,
        "lora_r": lora.r,
        # "all-linear" resolves to every layer's names: the kinds of layer are enough here.
        "lora_targets": sorted({name.rsplit(".", 1)[-1] for name in lora.target_modules}),
        "gradient_checkpointing": checkpointing,
        "optimizer": "AdamW (the HF Trainer's default) on the adapter",
        "anchors_tokens_per_s": ANCHORS,
    }


def memory_conversation(tokenizer: Any, prompt_tokens: int) -> list[ChatMessage]:
    """A chat whose newest message carries a memory block (twin's own block, placed where
    serving places it), grown by recalled lines until its prompt has `prompt_tokens` tokens."""
    from twin.core.chat_format import encode_prompt
    from twin.core.conversation import Remembered, memory_block, with_block, with_system_prompt

    question: ChatMessage = {"role": "user", "content": QUESTION}
    chat = with_system_prompt(SYSTEM, [question])
    recalled: list[Remembered] = []
    while True:
        block = memory_block(recalled, [], language="en", scope="chat", max_tokens=10**9)
        conversation = with_block(chat, block)
        if len(encode_prompt(tokenizer, conversation)) >= prompt_tokens:
            return conversation
        answered, text = RECALLED[len(recalled) % len(RECALLED)]
        recalled.append(Remembered(text=text, answered=answered))


def measure_replies(config: Config, sizes: Sizes, adapter: Path) -> dict[str, Any]:
    """One reply decoded plainly and with memory guidance, alternating, by the engine that
    serves the adapter."""
    from serving.transformers import TransformersEngine
    from trainer.generation import contrast_prompts, reply_tokens
    from trainer.model import load_base
    from twin.core.chat_format import encode_prompt
    from twin.core.config import GenerationConfig

    engine = TransformersEngine(load_base(config))
    engine.swap(adapter)
    conversation = memory_conversation(engine.tokenizer, sizes.prompt_tokens)
    guided = GenerationConfig(max_new_tokens=sizes.new_tokens, temperature=0.0)
    plain = guided.model_copy(update={"memory_guidance": 0.0})
    contrast = contrast_prompts(engine.tokenizer, [conversation], guided)[0]
    assert contrast is not None, "the conversation must carry a memory block"

    def reply(generation: GenerationConfig) -> tuple[float, int]:
        # trainer.generation.reply_tokens is what the engine's generate runs, short of
        # decoding the ids to text: called directly, the new tokens can be counted.
        started = time.perf_counter()
        tokens = reply_tokens(engine.model, engine.tokenizer, [conversation], generation)[0]
        return time.perf_counter() - started, len(tokens)

    # Warm-up, one whole reply each: a shorter one left the first timed guided reply of a 4-bit
    # base on the CPU 7x slower than the next (bitsandbytes' first calls at new shapes).
    for generation in (plain, guided):
        reply(generation)
    rounds: dict[str, list[tuple[float, int]]] = {"plain": [], "guided": []}
    for _ in range(sizes.rounds):
        rounds["plain"].append(reply(plain))
        rounds["guided"].append(reply(guided))
    figures: dict[str, Any] = {}
    for name, timed in rounds.items():
        seconds, tokens = min(timed)
        figures[name] = {
            "seconds": seconds,
            "new_tokens": tokens,
            "tokens_per_s": tokens / seconds,
            "rounds_s": [s for s, _ in timed],
        }
    result = {
        "prompt_tokens": len(encode_prompt(engine.tokenizer, conversation)),
        "contrast_prompt_tokens": len(contrast),
        "new_tokens_asked": sizes.new_tokens,
        "memory_guidance": guided.memory_guidance,
        "repetition_penalty": guided.repetition_penalty,
        "adapter": "merged" if engine.merged else "unmerged",
        **figures,
        "guided_over_plain": figures["guided"]["seconds"] / figures["plain"]["seconds"],
    }
    engine.close()
    release_memory()
    return result


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("torch", "transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def measure(sizes: Sizes, quantization: str, say: Callable[[str], None]) -> dict[str, Any]:
    started = time.perf_counter()
    plan = plan_for(quantization)
    with tempfile.TemporaryDirectory(prefix="twin-bench-gpu-") as tmp:
        folder = Path(tmp)
        base = folder / "base"
        say("writing a random checkpoint with these shapes ...")
        parameters = write_random_base(base, sizes.shape, plan.device)
        say(f"{parameters / 1e9:.2f}B parameters")
        config = bench_config(folder, base, sizes, quantization)
        say(
            f"training: {plan.describe()}, {sizes.warmup_steps} warm-up + "
            f"{sizes.timed_steps} timed steps of {sizes.batch} x {sizes.seq_tokens} tokens ..."
        )
        training = measure_training(config, sizes, folder / "adapter")
        say(f"replies: {sizes.new_tokens} new tokens, plain and guided, {sizes.rounds} rounds ...")
        replies = measure_replies(config, sizes, folder / "adapter")
    return {
        "gpu": torch.cuda.get_device_name(0) if plan.device == "cuda" else None,
        "device": plan.device,
        "quantized": plan.quantized,
        "precision": plan.describe(),
        "model": {
            "shape": "Qwen2.5-7B" if sizes.shape == QWEN25_7B else "tiny",
            **sizes.shape,
            "parameters": parameters,
            "weights": "random (no hub: speed does not depend on values)",
        },
        "training": training,
        "replies": replies,
        "versions": versions(),
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: runs on a CPU too")
    parser.add_argument(
        "--quantization",
        choices=("auto", "nf4", "none"),
        default="auto",
        help="as [model] quantization: auto = 4-bit on CUDA, full precision on a CPU",
    )
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    # Everything is made here: a library asking a hub for anything would be a bug of this
    # benchmark. Set before transformers (and huggingface_hub, which reads it once) load.
    os.environ["HF_HUB_OFFLINE"] = "1"
    # bitsandbytes on a CPU asks the `kernels` package for a hub kernel; offline, that logs
    # "Skipping publisher trust check" and falls back to its own. Nothing to act on.
    logging.getLogger("kernels").setLevel(logging.ERROR)
    if reason := unavailable(args.quantization, cpu_ok=args.tiny):
        print(f"bench.gpu: {reason}", file=sys.stderr)
        raise SystemExit(2)

    def say(line: str) -> None:  # stderr: `python -m bench` keeps a child's stdout quiet
        print(f"gpu: {line}", file=sys.stderr, flush=True)

    sizes = TINY if args.tiny else FULL
    result = measure(sizes, args.quantization, say)
    training, replies = result["training"], result["replies"]
    say(
        f"{training['tokens_per_s']:,.0f} training tokens/s, peak "
        f"{training['peak_memory_mb']:,.0f} MB; a reply {replies['plain']['seconds']:.2f} s "
        f"plain, {replies['guided']['seconds']:.2f} s guided "
        f"(x{replies['guided_over_plain']:.2f}); {result['seconds']:.0f} s in all"
    )
    if not all(math.isfinite(v) for v in (training["tokens_per_s"], replies["guided_over_plain"])):
        raise RuntimeError(f"a figure is not finite: {training}, {replies}")
    emit(result, args.out)


if __name__ == "__main__":
    main()
