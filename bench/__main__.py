"""`make bench` / `python -m bench [--quick]`: twin's benchmark suite.

Each figure compares twin against the obvious alternative in the same run on the same machine
(absolute times drift on shared machines; ratios hold), and keeps the raw numbers behind it.
Writes bench/results.json and docs/benchmarks.md for a full run; --quick, a smoke test with
small sizes and no thresholds, writes bench/out/results.json and bench/out/benchmarks.md.
--gpu measures only the GPU group (bench.gpu; never part of a full run, which needs no GPU)
and merges its figures into the recorded ones, as --only does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def measured(module: str, *args: str) -> dict[str, Any]:
    """Run one benchmark in a child process of its own: no model, thread pool or allocator
    state from another measurement, and peak RSS figures that start from nothing."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        subprocess.run(
            [sys.executable, "-m", f"bench.{module}", *args, "--out", str(out)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


# The groups of figures `--only` picks from, in the order a full run measures them.
GROUPS = (
    "training",
    "replies",
    "business",
    "preference",
    "ingest",
    "llamacpp",
    "memory",
    "voice",
)

# What Whisper base reaches on real speech, beside the WER measured on espeak-ng's voice:
# Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision"
# (arXiv:2212.04356), Appendix D: WER after Whisper's own text normalizer.
WHISPER_BASE_PUBLISHED_WER = {
    "en": "0.050 on LibriSpeech test-clean, 0.089 on FLEURS en (Whisper paper)",
    "ru": "0.205 on FLEURS ru, 0.288 on Common Voice 9 ru (Whisper paper, Tables 13 and 11,"
    " as secondary sources quote them; not checked against the PDF here)",
}


def figure(value: float, target: str, compares: str, raw: dict[str, Any]) -> dict[str, Any]:
    return {"value": value, "target": target, "compares": compares, "raw": raw}


def run(quick: bool, only: set[str] | None = None) -> dict[str, Any]:
    """Every group of figures, or only those in `only` (see GROUPS)."""
    results: dict[str, Any] = {}
    if only is None or "training" in only:
        steps = 4 if quick else 20
        print(f"training: twin vs a naive loop, {steps} steps each ...", flush=True)
        training = measured("training", "--steps", str(steps))
        results["train_speedup_vs_naive"] = figure(
            training["speedup"],
            ">= 1.5",
            "training tokens/s of twin's loop / a naive fp32 loop padding to the longest example",
            {"twin": training["twin"], "naive": training["naive"]},
        )
        results["train_mfu"] = figure(
            training["mfu_4nt"],
            ">= 0.5 (CPU)",
            "4 x params x tokens/s (a frozen base computes no weight gradients) / measured "
            "matmul peak FLOP/s (same dtype)",
            {
                "model_flops_per_s_6nt": training["model_flops_6nt"],
                "matmul_peak_flops_per_s": training["matmul_peak_flops"],
                "mfu_with_6nt": training["mfu"],
                "dtype": training["twin"]["dtype"],
            },
        )
    if only is None or "replies" in only:
        chats = 4 if quick else 16
        new_tokens = 8 if quick else 32
        print(f"replies: latency and {chats}-chat throughput through the bot ...", flush=True)
        replies = measured("replies", "--chats", str(chats), "--new-tokens", str(new_tokens))
        results["reply_overhead"] = figure(
            replies["reply_overhead"],
            "<= 1.10",
            "update in at the Bot API -> reply out / bare generate for the same tokens",
            {k: replies[k] for k in ("latency_s", "bare_generate_s", "new_tokens")},
        )
        results["memory_reply_overhead"] = figure(
            replies["memory_reply_overhead"],
            "<= 1.10",
            "reply latency with [memory] on (search + the longer prompt, decoded plainly) / off, "
            "same chats",
            {
                k: replies[k]
                for k in (
                    "latency_s",
                    "latency_with_memory_s",
                    "memory_entries",
                    "replies_with_block",
                )
            },
        )
        results["guided_reply_overhead"] = figure(
            replies["guided_reply_overhead"],
            "<= 1.5",
            "a reply with memory-guided decoding vs the same reply decoded plainly, memory on both",
            {
                k: replies[k]
                for k in (
                    "latency_with_memory_s",
                    "latency_with_memory_guided_s",
                    "memory_guidance",
                    "replies_with_block",
                    "new_tokens",
                )
            },
        )
        batched = (
            "concurrent_replies_per_s",
            "one_at_a_time_replies_per_s",
            "concurrent_generate_calls",
        )
        results["batched_speedup"] = figure(
            replies["batched_speedup"],
            ">= 3",
            f"replies/s with {chats} chats at once / one chat at a time, [memory] off",
            {**{k: replies[k] for k in batched}, "chats": chats},
        )
        results["batched_speedup_guided"] = figure(
            replies["batched_speedup_guided"],
            ">= 3",
            f"the same with [memory] on and memory-guided decoding: each of the {chats} replies "
            "carries a block and a contrast row in the batch",
            {
                **{k: replies[f"{k}_guided"] for k in batched},
                "concurrent_replies_with_block": replies["concurrent_replies_with_block_guided"],
                "chats": chats,
            },
        )
    if only is None or "business" in only:
        rounds = 2 if quick else 8
        print(f"business: a friend's message -> the owner's draft, {rounds} rounds ...", flush=True)
        business = measured("business", "--rounds", str(rounds))
        results["business_draft_overhead"] = figure(
            business["draft_overhead"],
            "<= 1.10",
            "a friend's message in the owner's chat (Telegram Business) -> the owner's draft, / "
            "the same message in the friend's chat with the bot -> reply (memory on, guided, "
            "greedy, the same tokens)",
            {k: business[k] for k in ("draft_s", "reply_s", "new_tokens", "replies_with_block")},
        )
    if only is None or "preference" in only:
        steps = 4 if quick else 60
        for lang in ("en",) if quick else ("en", "ru"):
            print(f"preference: SFT alone vs SFT + preference, demo {lang} ...", flush=True)
            quick_args = ("--no-eval",) if quick else ()
            pref = measured("preference", "--lang", lang, "--steps", str(steps), *quick_args)
            raw = {
                "kept": pref["kept"],
                "sft": pref["sft"]["figures"],
                "sft_plus_preference": pref["preference"]["figures"],
                "stage": pref["preference"]["stage"],
                "run_seconds": {
                    "sft": pref["sft"]["run_seconds"],
                    "sft_plus_preference": pref["preference"]["run_seconds"],
                },
            }
            results[f"preference_auc_drop_{lang}"] = figure(
                pref["auc_drop"],
                ">= 0.05",
                f"real-vs-twin AUC of SFT alone - of the adapter the gate kept after the "
                f"preference stage (demo {lang}, {steps} steps, `twin eval`)",
                raw,
            )
            results[f"preference_stage_share_{lang}"] = figure(
                pref["stage_share"],
                "<= 0.3",
                f"seconds of the preference stage (sampling, DPO, its eval) / the whole run "
                f"(demo {lang})",
                {"stage_seconds": pref["stage_seconds"]},
            )
    if only is None or "ingest" in only:
        messages = 100_000 if quick else 1_000_000
        print(f"ingest: {messages:,}-message export ...", flush=True)
        ingest = measured("ingest", "--messages", str(messages))
        results["ingest_rss_vs_jsonload"] = figure(
            ingest["first_import_peak_rss_mb"] / ingest["json_load_peak_rss_mb"],
            "<= 0.2",
            "peak RSS of twin ingest export / peak RSS of json.load of the same file",
            ingest,
        )
        results["ingest_msgs_per_s"] = figure(
            messages / ingest["first_import_s"],
            ">= 50000",
            "messages imported per second (whole command, start-up included)",
            {"messages": messages, "seconds": ingest["first_import_s"]},
        )
        results["incremental_noop_s"] = figure(
            ingest["second_import_s"],
            f"< {0.1 * ingest['first_import_s']:.1f} (10% of the first import)",
            "a second import of the same export, seconds",
            {"first_import_s": ingest["first_import_s"]},
        )
    if only is None or "llamacpp" in only:
        print("llama.cpp vs transformers fp32: the same adapter and prompts ...", flush=True)
        sizes = ("1", "4", "3", "2", "10", "1") if quick else ("2", "8", "10", "4", "100", "3")
        llama = measured(
            "llamacpp",
            *("--rounds", sizes[0], "--prompts", sizes[1], "--chats", sizes[2]),
            *("--messages", sizes[3], "--state-chats", sizes[4], "--quality-draws", sizes[5]),
        )
        raw = {
            "speedup": llama["speedup"],
            "guided_overhead": llama["guided_overhead"],
            "first_16_tokens_agree": llama["first_16_tokens_agree"],
            "identical_greedy_replies": llama["identical_greedy_replies"],
            "prompt_tokens": llama["prompt_tokens"],
            "served_gguf": llama["served_gguf"],
            "fidelity": llama["fidelity"],
        }
        results["llamacpp_reply_speedup"] = figure(
            llama["speedup"]["going_on"],
            ">= 4",
            f"reply tokens/s of the llama.cpp engine / the transformers engine (fp32) in "
            f"{llama['chats']} chats going on (each next message, the chat so far and a memory "
            "block in its prompt), same adapter, greedy and memory-guided",
            raw,
        )
        results["llamacpp_first_reply_speedup"] = figure(
            llama["speedup"]["first"],
            ">= 2",
            "the same for the first message of a chat (held-out prompts; llama.cpp has read the "
            "persona prompt before)",
            {"first_cold": llama["speedup"]["first_cold"]},
        )
        results["guided_reply_overhead_llamacpp"] = figure(
            llama["guided_overhead"]["llama.cpp"],
            "<= 1.5",
            "seconds per reply token with memory-guided decoding / decoded plainly, llama.cpp, "
            "chats going on",
            {"transformers": llama["guided_overhead"]["transformers"]},
        )
        states = llama["states"]
        results["llamacpp_chat_states_mb"] = figure(
            states["largest_kept_mb"],
            f"<= {states['bound_mb']:g} ([serving] chat_states_mb)",
            f"MB of chats' KV states llama.cpp kept at most, {states['chats']} chats' first "
            "messages (guided: two states a chat)",
            states,
        )
    if only is None or "memory" in only:
        history = 20_000 if quick else 1_000_000
        print(f"memory: indexing and searching a {history:,}-message history ...", flush=True)
        memory = measured("memory", "--messages", str(history))
        results["memory_index_entries_per_s"] = figure(
            memory["build_entries_per_s"],
            "measured (no target)",
            "owner messages masked, embedded (USE v3, one thread) and indexed per second",
            {k: memory[k] for k in ("messages", "entries", "build_s", "memory_db_mb")},
        )
        results["memory_build_peak_rss_mb"] = figure(
            memory["build_peak_rss_mb"],
            "< 1024 at 1M messages",
            "peak RSS of building the memory index (embedder included)",
            {"embedder_only_peak_rss_mb": memory["embedder_only_peak_rss_mb"]},
        )
        results["memory_query_peak_rss_mb"] = figure(
            memory["query_peak_rss_mb"],
            "< 1024 at 1M messages",
            "peak RSS of searching it, one chat and every chat",
            {k: v for k, v in memory.items() if k.startswith("query_") and "rss" not in k},
        )
    if only is None or "voice" in only:
        print("voice: Whisper base transcribing espeak-ng voice messages ...", flush=True)
        voice = measured("voice", *(["--quick"] if quick else []))
        setup = {k: voice[k] for k in ("speech", "model", "compute_type", "threads", "files")}
        results["voice_realtime_factor"] = figure(
            voice["realtime_factor"],
            "<= 0.3",
            "seconds spent transcribing / seconds of speech, Whisper base int8 via "
            "faster-whisper on all cores, espeak-ng voice messages in English and Russian",
            {
                **{
                    k: voice[k]
                    for k in (
                        "realtime_factor_en",
                        "realtime_factor_ru",
                        "audio_s",
                        "transcribe_s",
                        "decode_s",
                        "load_s",
                        "load_average_before",
                    )
                },
                **setup,
            },
        )
        results["voice_peak_rss_gb"] = figure(
            voice["peak_rss_gb"],
            "<= 1.0",
            "peak RSS of the process that loaded Whisper base and transcribed them, GB",
            {"load_s": voice["load_s"], **setup},
        )
        for lang in ("en", "ru"):
            results[f"voice_wer_{lang}"] = figure(
                voice[f"wer_{lang}"],
                f"reported; Whisper base on real speech: {WHISPER_BASE_PUBLISHED_WER[lang]}",
                f"word error rate of those transcripts in {lang} (lowercased, no punctuation, "
                "ё as е), all of the language's words together",
                {"examples": voice["examples"][lang], **setup},
            )
    # Asked for by name only (`--gpu`): a full run measures what any machine can.
    if only is not None and "gpu" in only:
        print("gpu: QLoRA training and guided replies at Qwen2.5-7B's shapes ...", flush=True)
        gpu = measured("gpu", *(("--tiny",) if quick else ()))
        training, replies = gpu["training"], gpu["replies"]
        on = f"{gpu['model']['shape']} shapes (random weights), {gpu['precision']}, on {gpu['gpu']}"
        setup = {k: gpu[k] for k in ("gpu", "precision", "model", "versions")}
        anchors = training["anchors_tokens_per_s"]
        results["gpu_qlora_tokens_per_s"] = figure(
            training["tokens_per_s"],
            f"anchors: {anchors['hf_qlora_4bit_a100']:,.0f} (HF 4-bit QLoRA, A100), "
            f"{anchors['unsloth']:,.0f} (Unsloth)",
            f"training tokens/s of twin's LoRA fit (r={training['lora_r']} on every linear "
            f"layer, gradient checkpointing {'on' if training['gradient_checkpointing'] else 'off'}"
            f"), {training['batch']} x {training['seq_tokens']} tokens a step, {on}",
            {**training, **setup},
        )
        results["gpu_qlora_peak_memory_mb"] = figure(
            training["peak_memory_mb"],
            "measured (no target)",
            f"peak GPU memory of that training, MB ({training['peak_memory_of']})",
            {k: training[k] for k in ("batch", "seq_tokens", "peak_memory_of")},
        )
        results["gpu_guided_reply_overhead"] = figure(
            replies["guided_over_plain"],
            "<= 1.5",
            f"a reply with memory-guided decoding / the same prompt decoded plainly "
            f"({replies['prompt_tokens']}-token prompt, {replies['new_tokens_asked']} new tokens, "
            f"greedy), {on}",
            {**replies, **setup},
        )
    return {"machine": machine(), "quick": quick, "results": results}


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Run on {m['date']}: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}, "
        f"torch {m['torch']}, Python {m['python']}"
        + (" (--quick: smoke sizes)" if report["quick"] else ""),
        "",
    ]
    if g := m.get("gpu_run"):
        lines += [
            f"The `gpu_` figures: run on {g['date']}: {g['gpu']}, {g['cpu']}, {g['cores']} "
            f"cores, torch {g['torch']}, Python {g['python']}",
            "",
        ]
    lines += [
        "| figure | value | target | compares |",
        "|---|---|---|---|",
    ]
    for name, f in report["results"].items():
        lines.append(f"| `{name}` | {f['value']:.3g} | {f['target']} | {f['compares']} |")
    lines += [
        "",
        "How to read them:",
        "- Training: the demo persona's dataset, the embedded SmolLM2-135M, LoRA r=16 on every",
        "  linear layer, batch 4, the same steps for both loops; tokens are real (non-padding)",
        "  tokens. twin's loop groups examples by length and runs the output head on reply",
        "  tokens only; the naive loop pads every batch to the longest example and computes",
        "  logits everywhere. MFU counts 4 x parameters x tokens: with a frozen base no weight",
        "  gradients are computed (`mfu_with_6nt` in the raw numbers counts the usual 6x).",
        "- Replies: greedy decoding (so both produce the same tokens) with the Bot API stand-in",
        "  of the tests on 127.0.0.1; the batched figure is one generate call for all chats.",
        '  The guided batch has memory on with scope "all" (a chat with no history of its own',
        "  recalls from the others'), so every reply in it carries a block and its contrast row.",
        "- Business: the demo persona's store and memory, SmolLM2 without an adapter; each of the",
        "  demo friends' messages goes once to the bot's own chat and once to the owner's chat",
        "  through a business connection, alternating; the draft is timed to the notice with its",
        "  buttons in the owner's chat, the reply to its last message.",
        "- Preference: two `twin train` runs on a demo persona with the demo's settings and seed",
        "  ([preference] off, then on: the same SFT), each adapter then measured by `twin eval`",
        "  (the raw numbers hold AUC, style, relevance, loss and fact recall of both, and the",
        "  stage's record). When the gate kept SFT alone the AUC drop is 0; the stage's record",
        "  says what the stage would have made. The demo persona has 11 (en) and 5 (ru) held-out",
        "  prompts: its AUC moves in steps of about 0.01-0.04 and is noisy.",
        "- Ingest: a generated full-account export, imported by the `twin` command in a child",
        "  process (start-up included); the second import is of the very same file.",
        "- Memory: latency with `[memory]` off, on decoded plainly (`memory_guidance` 0) and on",
        "  with memory-guided decoding (its default) alternates, twice each, in one run, in the",
        "  demo persona's chats (each reply searches her indexed history and carries the block;",
        "  `replies_with_block` counts them). Guidance decodes a second row per reply (the prompt",
        "  without the block), so it also changes the tokens: the two may differ in length.",
        "  The index figures build and query a generated history of the stated size, each step",
        "  in a process of its own.",
        "- llama.cpp: the demo persona's adapter served by both engines with the same threads,",
        "  rounds alternating, each row its fastest round (transformers fp32, llama.cpp the",
        "  GGUF as served: SmolLM2 in Q8_0). Chats going on: more chats than llama.cpp has",
        "  sequences, each next message after the chat so far with the engine's own replies,",
        "  the block of a held-out message on it; llama.cpp restores each chat's kept state",
        "  and reads only what is new, transformers reads the whole prompt. `raw.speedup` also",
        "  has the first message read cold (nothing kept), guidance off, and decoding alone.",
        "- GPU (`python -m bench --gpu`, on a CUDA machine only): a model with Qwen2.5-7B's",
        "  shapes and random weights (nothing downloaded; speed does not depend on the values),",
        "  loaded as twin loads a base there (4-bit NF4, bf16 compute); twin's own LoRA setup",
        "  and fit loop on random 1,024-token sequences, every token labelled, timed after",
        "  warm-up steps. The anchors are quoted 7B QLoRA figures of other setups (another",
        "  GPU, other data): a scale, not a same-run comparison. The replies are the trained",
        "  adapter served by the transformers engine, a ~600-token prompt with a memory block,",
        "  64 new tokens (end-of-turn never picked), plain and guided alternating, fastest of 3.",
        "- Voice: chat-like sentences with no numbers in them, 16 in English and 16 in Russian,",
        "  spoken by espeak-ng (en-us at 150 words a minute, ru at 130) and encoded by opusenc at",
        "  24 kbit/s into Ogg/Opus as Telegram sends a voice message; twin's Transcriber (Whisper",
        "  base, int8, as many threads as cores) loads once (`raw.load_s`, not in the figure),",
        "  then decodes and transcribes each in its language. Whisper encodes a 30-second window",
        "  however short the message: its encoder costs as much for 3 seconds as for 30.",
        "  espeak-ng's voice is robotic, its Russian most of all: Whisper base mishears it. twin",
        "  decodes once (no temperature fallback) and at most 12 tokens a second of speech:",
        "  with faster-whisper's fallback the Russian took 1.2 s a second of speech, looping,",
        "  for no better WER. The WER here is a floor to watch, not a quality figure; the",
        "  targets quote what the paper measured on real speech (its WER normalizes text",
        "  further than this one does).",
        "",
        "Raw numbers: `bench/results.json`. Regenerate: `make bench` (about 75 minutes here, 40",
        "of them the preference group; `python -m bench --only memory ...` measures some groups",
        "again and keeps the rest).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--out", type=Path, help="default bench/results.json (--quick: bench/out/)")
    picked = parser.add_mutually_exclusive_group()
    picked.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        help="measure only these groups and keep the other figures recorded in --out",
    )
    picked.add_argument(
        "--gpu",
        action="store_true",
        help="measure only the GPU group (needs CUDA; with --quick at tiny sizes) and keep the "
        "other figures recorded in --out",
    )
    args = parser.parse_args()
    if args.out is None:  # a smoke run must not overwrite the recorded figures
        args.out = ROOT / "bench" / ("out/results.json" if args.quick else "results.json")
    only = ["gpu"] if args.gpu else args.only
    if args.gpu:
        from bench.gpu import unavailable

        if reason := unavailable("auto", cpu_ok=False):
            print(f"bench --gpu: {reason}", file=sys.stderr)
            raise SystemExit(2)
    report = run(args.quick, set(only) if only else None)
    if only and args.out.exists():
        recorded = json.loads(args.out.read_text())
        if recorded.get("quick") == args.quick:
            # The recorded order stays (dict merge keeps the first one's keys in place).
            report["results"] = {**recorded["results"], **report["results"]}
            if args.gpu:
                # A lent GPU machine is not the one that measured the other figures: the
                # header keeps that one (and its dates) and names this one apart.
                report["machine"] = {**recorded["machine"], "gpu_run": report["machine"]}
            else:
                recorded_date, again = recorded["machine"]["date"], ", ".join(only)
                earlier, _, notes = recorded_date.partition(" (")  # earlier notes stay
                today = report["machine"]["date"]
                note = f"{again} measured again" + ("" if today == earlier else f" on {today}")
                joined = "; ".join(filter(None, [notes[:-1], note]))
                report["machine"]["date"] = f"{earlier} ({joined})"
                if "gpu_run" in recorded["machine"]:  # the GPU figures kept keep their machine
                    report["machine"]["gpu_run"] = recorded["machine"]["gpu_run"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    table = ROOT / ("bench/out/benchmarks.md" if args.quick else "docs/benchmarks.md")
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text(markdown(report))
    print(markdown(report))
    print(f"wrote {args.out} and {table}")


if __name__ == "__main__":
    main()
