"""`twin demo`, the README's main job: end to end on the bundled persona and the real SmolLM2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, smollm2: Path) -> None:
    folder = tmp_path / "twin-demo"
    result = subprocess.run(
        [sys.executable, "-m", "twin", "demo", "--dir", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "747 messages added" in out
    assert "skipped: 1 bot_chat chats, 1 public_channel chats" in out
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in out
    # The memory step answers a question about an old fact with the memory block (guided and
    # plain decoding) and without it, then prints the benchmark's line.
    for label in ("(memory, guided)", "(memory, plain decoding)", "(without memory)"):
        assert label in out
    recall = re.search(r"fact recall: (\d+)% guided, (\d+)% plain, (\d+)% without memory", out)
    assert recall, out
    assert "over 4 draws" in out and "cross-chat leaks: " in out
    loss = re.search(
        r"held-out loss on the owner's real replies: base ([\d.]+) .* twin ([\d.]+)", out
    )
    assert loss, out
    base, twin = map(float, loss.groups())
    assert twin < base
    # Five held-out triples (base, twin, real), then the memory step's three twins.
    assert out.count("  base  ") == 5 and out.count("  twin  ") == 5 + 3
    assert f"twin chat --config {folder / 'config.toml'}" in out
    assert "TWIN_BOT_TOKEN" in out and "twin serve" in out and "twin retrain" in out
    assert (folder / "data" / "adapters" / "CURRENT").exists()
