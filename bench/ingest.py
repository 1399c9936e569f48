"""Benchmark: import a generated 1-million-message Telegram Desktop export.

Generates a full-account export (50 chats) into bench/out/, then runs `twin ingest export`
in a child process and reports messages/s and the child's peak RSS, plus the peak RSS of a
plain `json.load` of the same file for comparison, and a second (no-op) import.

    .venv/bin/python -m bench.ingest [--messages 1000000]   (or all benchmarks: python -m bench)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import emit

OUT = Path(__file__).resolve().parent / "out"
WORDS = (
    "ok",
    "sure",
    "lol",
    "tomorrow",
    "coffee",
    "deploy",
    "climbing",
    "cat",
    "why",
    "not",
    "maybe",
    "later",
    "ага",
    "привет",
    "да",
)


def write_export(path: Path, messages: int, chats: int = 50) -> None:
    """Stream a realistic export to disk without holding it in memory."""
    rng = random.Random(7)
    per_chat = messages // chats
    t0 = 1_600_000_000
    with path.open("w", encoding="utf-8") as f:
        f.write('{\n "personal_information": {"user_id": 1, "first_name": "Owner",')
        f.write(' "phone_number": "+44 7700 900000"},\n "chats": {\n  "about": "",\n  "list": [\n')
        for c in range(chats):
            peer = 1000 + c
            f.write(f'   {{"name": "Friend {c}", "type": "personal_chat", "id": {peer},')
            f.write(' "messages": [\n')
            date = t0
            for i in range(1, per_chat + 1):
                date += rng.choice((5, 30, 90, 600, 7200))
                sender = 1 if rng.random() < 0.5 else peer
                text = " ".join(rng.choices(WORDS, k=rng.randint(1, 12)))
                message = {
                    "id": i,
                    "type": "message",
                    "date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(date)),
                    "date_unixtime": str(date),
                    "from": "Owner" if sender == 1 else f"Friend {c}",
                    "from_id": f"user{sender}",
                    "text": text,
                    "text_entities": [{"type": "plain", "text": text}],
                }
                f.write("    " + json.dumps(message, ensure_ascii=False))
                f.write(",\n" if i < per_chat else "\n")
            f.write("   ]}" + (",\n" if c < chats - 1 else "\n"))
        f.write("  ]\n }\n}\n")


def peak_rss_of(command: list[str]) -> tuple[float, float, str]:
    """Run `command`; return (seconds, peak RSS in MB of that child alone, stdout)."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}")
    return seconds, usage.ru_maxrss / 1024, out


def measure_ingest(messages: int) -> dict[str, Any]:
    """Import a generated export of `messages` messages twice; a plain json.load beside it."""
    OUT.mkdir(exist_ok=True)
    export = OUT / f"result-{messages}.json"
    if not export.exists() or export.stat().st_size == 0:
        print(f"generating {messages:,} messages into {export} ...", flush=True)
        write_export(export, messages)
    data = OUT / "data"
    shutil.rmtree(data, ignore_errors=True)
    config = OUT / "config.toml"
    # The importer alone: indexing the memory (embedding every owner message) is bench.memory's.
    config.write_text('[paths]\ndata_dir = "data"\n[memory]\nenabled = false\n')
    twin = [sys.executable, "-m", "twin", "--config", str(config), "ingest", "export", str(export)]
    first_s, first_rss, _ = peak_rss_of(twin)
    again_s, _, _ = peak_rss_of(twin)
    load_s, load_rss, _ = peak_rss_of(
        [sys.executable, "-c", f"import json; json.load(open({str(export)!r}))"]
    )
    return {
        "messages": messages,
        "export_mb": export.stat().st_size / 2**20,
        "first_import_s": first_s,
        "first_import_peak_rss_mb": first_rss,
        "second_import_s": again_s,
        "json_load_s": load_s,
        "json_load_peak_rss_mb": load_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, help="also write the result there (JSON)")
    args = parser.parse_args()
    emit(measure_ingest(args.messages), args.out)


if __name__ == "__main__":
    main()
