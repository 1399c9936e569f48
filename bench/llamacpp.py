"""Benchmark: reply speed of the llama.cpp engine against transformers fp32, on the CPU.

Trains the demo persona's adapter on the embedded SmolLM2 for a few steps (its values do not
change the speed), then both engines serve that adapter and answer the demo dataset's
held-out messages (persona prompt, chat history and memory block included), greedy, with
memory-guided decoding as the bot decodes (its default guidance):
- transformers: the base in fp32 with the adapter merged;
- llama.cpp: the GGUF base as served (SmolLM2: Q8_0, see trainer.embedded) with the adapter
  as a GGUF LoRA;
both with `--threads` threads (default: one per core). On a machine whose cores other work
also uses, ask for fewer: llama.cpp's threads meet at a barrier after every operation, and
one descheduled thread stalls them all.
Rows:
- first: each held-out prompt as the first message of a chat of its own (llama.cpp has read
  the persona prompt before, as a bot that served any chat has); `first_cold` reads every
  prompt from its first token;
- going_on: `--chats` chats at once (more than llama.cpp has sequences), each message of
  each chat in turn, `--messages` rounds: each next message of a chat is answered after the
  chat so far, the engine's own replies in it, the message carrying the block searched for it
  (here: a held-out message's own block). The bot's normal case; figures count the rounds
  after the first. `going_on_plain`: the same with guidance off;
- decode: exactly `--decode-tokens` new tokens per message (end-of-turn ignored), one at a
  time: the generation speed itself;
- states: `--state-chats` chats' first messages into llama.cpp alone with the configured
  `[serving] chat_states_mb`: the bytes kept, chats dropped for room, and peak RSS.
Reply tokens are counted with the training base's tokenizer in each engine's own replies.

    .venv/bin/python -m bench.llamacpp [--steps 8] [--prompts 8] [--chats 10] [--messages 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import emit
from bench.training import demo_setup
from serving.llamacpp import LlamaCppEngine
from serving.transformers import TransformersEngine
from trainer.eval.evaluate import split_prompt
from trainer.generation import stop_tokens
from trainer.registry import current_version
from trainer.train import train
from twin.core.chat_format import encode_prompt
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage, block_of, with_block
from twin.core.loading import load_config


def held_out_examples(config: Config) -> list[list[ChatMessage]]:
    """The dataset's held-out examples, whole."""
    rows = (config.dataset_dir / "eval.jsonl").read_text().splitlines()
    return [json.loads(row)["messages"] for row in rows]


def held_out_prompts(config: Config, n: int) -> list[list[ChatMessage]]:
    """The first `n` held-out examples of the dataset, cut before their last reply."""
    return [split_prompt(example)[0] for example in held_out_examples(config)[:n]]


def configs(folder: Path, steps: int, threads: int) -> dict[str, Config]:
    """The demo's config, fp32 on the CPU, for each engine (one data dir)."""
    demo = demo_setup(folder)
    assert demo.source is not None
    text = demo.source.read_text()
    text = text.replace('base = "smollm2-135m"\n', 'base = "smollm2-135m"\ncpu_dtype = "fp32"\n')
    text = text.replace("max_steps = 30", f"max_steps = {steps}")
    text += "\n[eval]\non_train = false\nrequire_style_win = false\n"
    out = {}
    for engine in ("transformers", "llama.cpp"):
        path = folder / f"{engine}.toml"
        path.write_text(text + f'\n[serving]\nengine = "{engine}"\nthreads = {threads}\n')
        out[engine] = load_config(path)
    return out


def rate(tokenizer: Any, replies: list[str], seconds: float) -> dict[str, float]:
    tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies)
    return {"seconds": seconds, "reply_tokens": tokens, "reply_tokens_per_s": tokens / seconds}


def first_messages(
    engine: Any, prompts: list[list[ChatMessage]], generation: GenerationConfig, *, cold: bool
) -> dict[str, Any]:
    """Each prompt as the first message of a chat of its own (`cold`: nothing kept)."""
    replies = []
    started = time.perf_counter()
    forget = getattr(engine, "forget", None)  # transformers keeps nothing between calls
    for i, prompt in enumerate(prompts):
        if cold and forget is not None:
            forget()
        replies += engine.generate([prompt], generation, chats=[f"first {i}"])
    return {**rate(engine.tokenizer, replies, time.perf_counter() - started), "replies": replies}


def going_on(
    engine: Any,
    prompts: list[list[ChatMessage]],
    generation: GenerationConfig,
    chats: int,
    messages: int,
) -> dict[str, Any]:
    """`chats` chats, each message of each in turn: every next message answered after the
    chat so far (with the engine's own replies), carrying its block. Rounds after the first
    are counted."""
    pool = [(p[-1]["content"], block_of(p)) for p in prompts]
    persona = prompts[0][:1]
    history: list[list[ChatMessage]] = [list(persona) for _ in range(chats)]
    replies: list[str] = []
    seconds = 0.0
    for round_ in range(messages):
        for c in range(chats):
            text, block = pool[(c + round_ * chats) % len(pool)]
            history[c].append({"role": "user", "content": text})
            started = time.perf_counter()
            (reply,) = engine.generate(
                [with_block(history[c], block)], generation, chats=[f"chat {c}"]
            )
            if round_ > 0:
                seconds += time.perf_counter() - started
                replies.append(reply)
            history[c].append({"role": "assistant", "content": reply})
    longest = max(len(encode_prompt(engine.tokenizer, h)) for h in history)
    return {**rate(engine.tokenizer, replies, seconds), "longest_chat_tokens": longest}


def quality(
    engine: Any, examples: list[list[ChatMessage]], generation: GenerationConfig, draws: int
) -> dict[str, Any]:
    """The fidelity eval's figures of an engine's replies to every held-out message, sampled
    as the twin serves (the configured temperature), `draws` seeded draws: style distance,
    real-vs-twin AUC and relevance against the owner's real replies, per draw."""
    from trainer.eval import fidelity

    prompts, real = (list(x) for x in zip(*(split_prompt(e) for e in examples), strict=True))
    embed = fidelity.sentence_embedder()
    out: dict[str, list[float | None]] = {"style_distance": [], "auc": [], "relevance": []}
    for seed in range(draws):
        torch.manual_seed(seed)  # both engines draw through torch's generator
        replies = engine.generate(prompts, generation)
        out["style_distance"].append(fidelity.style_distance(real, replies)["overall"])
        out["auc"].append(fidelity.distinguishability_auc(real, replies, seed=seed))
        if embed is not None:
            out["relevance"].append(fidelity.semantic_similarity(real, replies, embed))
    return {"draws": draws, "messages": len(prompts), **out}


def states_within_bound(
    engine: LlamaCppEngine, prompts: list[list[ChatMessage]], generation: GenerationConfig, n: int
) -> dict[str, Any]:
    """`n` chats' first messages: the states kept stay within `[serving] chat_states_mb`."""
    engine.forget()
    largest = 0
    rss_before = _rss_mb()
    started = time.perf_counter()
    for c in range(n):
        engine.generate([prompts[c % len(prompts)]], generation, chats=[f"state {c}"])
        largest = max(largest, engine.states.nbytes)
    return {
        "chats": n,
        "seconds": time.perf_counter() - started,
        "bound_mb": engine.states.bound_bytes / 2**20,
        "largest_kept_mb": largest / 2**20,
        "kept_states": len(engine.states),
        "evicted_states": engine.states.evicted,
        # The process also holds both engines' models, and trained the adapter: its RSS grew
        # by the states (and llama.cpp's buffers), its peak is the training's.
        "rss_before_mb": rss_before,
        "rss_after_mb": _rss_mb(),
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def decode_transformers(engine: TransformersEngine, prompts: list[list[ChatMessage]],
                        generation: GenerationConfig) -> dict[str, float]:  # fmt: skip
    n = generation.max_new_tokens
    started = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([encode_prompt(engine.tokenizer, prompt)])
            engine.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,  # the end-of-turn is never picked: n tokens each
                do_sample=False,
                repetition_penalty=generation.repetition_penalty,
                eos_token_id=stop_tokens(engine.tokenizer),
                pad_token_id=engine.tokenizer.pad_token_id,
            )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "reply_tokens": n * len(prompts),
            "reply_tokens_per_s": n * len(prompts) / seconds}  # fmt: skip


def decode_llamacpp(engine: LlamaCppEngine, prompts: list[list[ChatMessage]],
                    generation: GenerationConfig) -> dict[str, float]:  # fmt: skip
    n = generation.max_new_tokens
    stops, engine._stop_ids = engine._stop_ids, frozenset()  # n tokens each
    started = time.perf_counter()
    for prompt in prompts:
        engine.forget()
        engine.generate([prompt], generation)
    seconds = time.perf_counter() - started
    engine._stop_ids = stops
    return {"seconds": seconds, "reply_tokens": n * len(prompts),
            "reply_tokens_per_s": n * len(prompts) / seconds}  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        config = configs(Path(folder), args.steps, args.threads)
        train(config["transformers"])
        torch.set_num_threads(args.threads)  # the same number of threads for both engines
        version = current_version(config["transformers"].adapters_dir)
        assert version is not None
        adapter = config["transformers"].adapters_dir / version
        prompts = held_out_prompts(config["transformers"], args.prompts)
        pool = held_out_prompts(config["transformers"], 10_000)
        configured = config["llama.cpp"].generation
        guided = configured.model_copy(
            update={"max_new_tokens": args.new_tokens, "temperature": 0.0}
        )
        plain = guided.model_copy(update={"memory_guidance": 0.0})
        decode = plain.model_copy(update={"max_new_tokens": args.decode_tokens})

        hf = TransformersEngine.load(config["transformers"])
        llama = LlamaCppEngine(config["llama.cpp"])
        prompt_tokens = [len(encode_prompt(hf.tokenizer, p)) for p in prompts]
        chats, messages = args.chats, args.messages
        runs = {
            "transformers first": lambda: first_messages(hf, prompts, guided, cold=True),
            "llama.cpp first": lambda: first_messages(llama, prompts, guided, cold=False),
            "llama.cpp first_cold": lambda: first_messages(llama, prompts, guided, cold=True),
            "transformers going_on": lambda: going_on(hf, pool, guided, chats, messages),
            "llama.cpp going_on": lambda: going_on(llama, pool, guided, chats, messages),
            "transformers going_on_plain": lambda: going_on(hf, pool, plain, chats, messages),
            "llama.cpp going_on_plain": lambda: going_on(llama, pool, plain, chats, messages),
            "transformers decode": lambda: decode_transformers(hf, prompts, decode),
            "llama.cpp decode": lambda: decode_llamacpp(llama, prompts, decode),
        }
        for engine in (hf, llama):
            engine.swap(adapter)
            engine.generate(prompts[:1], guided)  # warm-up
        # The engines take turns, and each row keeps its fastest round: on a machine shared
        # with other work, the round least slowed down by it.
        results: dict[str, Any] = {}
        for _ in range(args.rounds):
            for name, run in runs.items():
                llama.forget()  # each row starts with nothing read
                row = run()
                if name not in results or row["seconds"] < results[name]["seconds"]:
                    results[name] = row
        same = sum(
            a == b
            for a, b in zip(
                results["llama.cpp first"]["replies"],
                results["transformers first"]["replies"],
                strict=True,
            )
        )
        first16 = sum(
            _tokens(hf.tokenizer, a)[:16] == _tokens(hf.tokenizer, b)[:16]
            for a, b in zip(
                results["llama.cpp first"]["replies"],
                results["transformers first"]["replies"],
                strict=True,
            )
        )
        states = states_within_bound(llama, pool, guided, args.state_chats)
        sampled = configured.model_copy(update={"max_new_tokens": args.new_tokens})
        examples = held_out_examples(config["transformers"])
        fidelity = {
            name: quality(engine, examples, sampled, args.quality_draws)
            for name, engine in (("transformers", hf), ("llama.cpp", llama))
        }
        served = llama.served_gguf.name
        hf.close()
        llama.close()

    for row in results.values():
        row.pop("replies", None)
    pairs = (
        ("first", "first"),
        ("first_cold", "first"),
        ("going_on", "going_on"),
        ("going_on_plain", "going_on_plain"),
        ("decode", "decode"),
    )
    speedups = {
        run: results[f"llama.cpp {run}"]["reply_tokens_per_s"]
        / results[f"transformers {against}"]["reply_tokens_per_s"]
        for run, against in pairs
    }

    def per_token(name: str) -> float:
        row = results[name]
        return float(row["seconds"] / max(row["reply_tokens"], 1))

    return {
        **results,
        "speedup": speedups,
        # Seconds per reply token guided / plain, in a chat going on, per engine.
        "guided_overhead": {
            engine: per_token(f"{engine} going_on") / per_token(f"{engine} going_on_plain")
            for engine in ("llama.cpp", "transformers")
        },
        "states": states,
        "fidelity": fidelity,
        "identical_greedy_replies": f"{same}/{len(prompts)}",
        "first_16_tokens_agree": first16 / len(prompts),
        "prompts": len(prompts),
        "prompt_tokens": prompt_tokens,
        "chats": chats,
        "messages": messages,
        "max_new_tokens": args.new_tokens,
        "decode_tokens": args.decode_tokens,
        "threads": args.threads,
        "rounds": args.rounds,
        "served_gguf": served,
        "load_average_after": os.getloadavg()[0],
    }


def _tokens(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--chats", type=int, default=10, help="chats going on at once")
    parser.add_argument("--messages", type=int, default=4, help="messages per chat going on")
    parser.add_argument("--state-chats", type=int, default=100)
    parser.add_argument("--quality-draws", type=int, default=3, help="sampled draws per engine")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="both engines")
    parser.add_argument("--rounds", type=int, default=3, help="each row keeps its fastest")
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    emit(measure(parser.parse_args()), parser.parse_args().out)


if __name__ == "__main__":
    main()
