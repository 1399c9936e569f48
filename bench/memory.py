"""Benchmark: build the memory index of a generated 1-million-message history, and query it.

Generates a full-account export (bench.ingest.write_export: 50 chats, half the messages the
owner's) into bench/out/, imports it with `twin ingest export`, then, each in a child process
of its own so peak RSS is that step's alone:
- build: `MemoryIndex.update` with the real embedder (USE multilingual v3, one thread):
  entries/s and peak RSS; then a second update, which must find nothing new;
- query: searches scoped to one chat, over every chat, and over every chat with `before`:
  median latency and peak RSS;
- the embedder alone (load it, encode one text): the part of both RSS figures that is the
  model, not the index.

    .venv/bin/python -m bench.memory [--messages 1000000] [--queries 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import emit
from bench.ingest import OUT, WORDS, peak_rss_of, write_export

QUERIES = [
    "coffee tomorrow?",
    "why not climbing later",
    "привет, ты завтра да?",
    "did the deploy go ok",
    "maybe the cat, maybe not",
]


def measure_memory(messages: int, queries: int) -> dict[str, Any]:
    OUT.mkdir(exist_ok=True)
    export = OUT / f"result-{messages}.json"
    if not export.exists() or export.stat().st_size == 0:
        print(f"generating {messages:,} messages into {export} ...", flush=True)
        write_export(export, messages)
    data = OUT / "memory-data"
    shutil.rmtree(data, ignore_errors=True)
    config = OUT / "memory-config.toml"
    # Imported without memory, so that the build step below does all the indexing.
    config.write_text('[paths]\ndata_dir = "memory-data"\n[memory]\nenabled = false\n')
    print("importing ...", flush=True)
    twin = [sys.executable, "-m", "twin", "--config", str(config), "ingest", "export", str(export)]
    import_s, _, _ = peak_rss_of(twin)

    me = [sys.executable, "-m", "bench.memory", "--data", str(data)]
    print("building the index ...", flush=True)
    build_s, build_rss, out = peak_rss_of([*me, "--step", "build"])
    build = json.loads(out.splitlines()[-1])
    if not build["entries"]:
        raise SystemExit("bench.memory: the build step indexed nothing (was it indexed already?)")
    again_s, _, out = peak_rss_of([*me, "--step", "build"])
    again = json.loads(out.splitlines()[-1])
    print("querying ...", flush=True)
    _, query_rss, out = peak_rss_of([*me, "--step", "query", "--queries", str(queries)])
    query = json.loads(out.splitlines()[-1])
    _, model_rss, _ = peak_rss_of([*me, "--step", "model"])
    db = data / "memory.db"
    return {
        "messages": messages,
        "entries": build["entries"],
        "skipped": build["skipped"],
        "import_s": import_s,
        "build_s": build["seconds"],
        "build_entries_per_s": build["entries"] / build["seconds"],
        "build_command_s": build_s,
        "build_peak_rss_mb": build_rss,
        "second_update_added": again["entries"],
        "second_update_s": again["seconds"],
        "second_update_command_s": again_s,
        "memory_db_mb": db.stat().st_size / 2**20,
        "int8_vectors_mb": build["entries"] * 516 / 2**20,
        "float32_vectors_mb": build["entries"] * 2048 / 2**20,
        **query,
        "query_peak_rss_mb": query_rss,
        "embedder_only_peak_rss_mb": model_rss,
    }


def build_step(data: Path) -> dict[str, Any]:
    from ingest.encoder import SentenceEncoder
    from ingest.memory import open_memory
    from ingest.pii import PiiScrubber
    from ingest.store import open_store

    with open_store(data / "twin.db") as store, open_memory(data / "memory.db") as memory:
        owner = store.owner()
        phones = (owner.phone,) if owner and owner.phone else ()
        summary = memory.update(store, PiiScrubber(owner_phones=phones), SentenceEncoder())
        print(summary.line(), file=sys.stderr)
    return {
        "entries": summary.added,
        "seconds": summary.seconds,
        "skipped": dict(summary.skipped),
    }


def query_step(data: Path, queries: int) -> dict[str, Any]:
    from ingest.encoder import SentenceEncoder
    from ingest.memory import open_memory

    encoder = SentenceEncoder()
    encoder.encode(["warm up"])
    timings: dict[str, list[float]] = {"chat": [], "all": [], "all_before": []}
    with open_memory(data / "memory.db") as memory:
        chats = [row[0] for row in memory.conn.execute("SELECT DISTINCT chat_id FROM entries")]
        first, last = memory.conn.execute("SELECT min(date), max(date) FROM entries").fetchone()
        for i in range(queries):
            query = QUERIES[i % len(QUERIES)] + " " + WORDS[i % len(WORDS)]
            for kind, scope, before in (
                ("chat", {chats[i % len(chats)]}, None),
                ("all", None, None),
                ("all_before", None, (first + last) // 2),
            ):
                started = time.perf_counter()
                found = memory.search(query, chats=scope, before=before, embedder=encoder)
                timings[kind].append(time.perf_counter() - started)
                assert found, query
        per_chat = memory.count() / max(len(chats), 1)
    return {
        "entries_per_chat": per_chat,
        **{f"query_{k}_median_s": statistics.median(v) for k, v in timings.items()},
        **{f"query_{k}_max_s": max(v) for k, v in timings.items()},
    }


def model_step() -> dict[str, Any]:
    from ingest.encoder import SentenceEncoder

    SentenceEncoder().encode(["warm up"])
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    parser.add_argument("--step", choices=("build", "query", "model"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "build":
        print(json.dumps(build_step(args.data)))
    elif args.step == "query":
        print(json.dumps(query_step(args.data, args.queries)))
    elif args.step == "model":
        print(json.dumps(model_step()))
    else:
        emit(measure_memory(args.messages, args.queries), args.out)


if __name__ == "__main__":
    main()
