"""`twin demo`: the whole pipeline, offline, on a bundled sample persona, in a folder of its own.

Imports a Telegram Desktop export written for this project (a fictional owner with a very
recognisable style), builds the dataset, fine-tunes the embedded SmolLM2 for a short run
(a few minutes on two CPU cores), then shows the base model's and the twin's replies to
held-out messages side by side, with the held-out loss before and after.
"""

from __future__ import annotations

import textwrap
from importlib import resources
from pathlib import Path

from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.store import open_store
from trainer.eval_report import headline_table
from trainer.train import train
from twin.config import load_config

# A short run that still changes the style visibly: measured on 2 CPU cores.
DEMO_CONFIG = """\
# twin demo: a sample persona's Telegram export, bundled with twin.
[paths]
data_dir = "data"

[model]
base = "smollm2-135m"

[dataset]
max_tokens = 256

[train]
max_steps = 30
batch_size = 4
learning_rate = 1e-3
max_seq_tokens = 320
checkpoint_steps = 0
sample_replies = 5

[generation]
max_new_tokens = 40
temperature = 0.7
"""


def demo_export_path() -> Path:
    return Path(str(resources.files("ingest") / "data" / "demo_export.json"))


def run_demo(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "config.toml"
    if not config_path.exists():
        config_path.write_text(DEMO_CONFIG, encoding="utf-8")
    config = load_config(config_path)
    print(f"[1/4] importing the bundled sample export into {config.store_path}", flush=True)
    with open_store(config.store_path) as store:
        print("      " + import_export(demo_export_path(), store).line())
        print("[2/4] building the dialog dataset", flush=True)
        print("      " + build_dataset(config, store).line())
    print(f"[3/4] fine-tuning SmolLM2-135M with LoRA ({config.train.max_steps} steps)", flush=True)
    result = train(config)
    print("      " + result.line())
    print("[4/4] held-out messages: the base model vs the twin vs what the owner really wrote\n")
    for sample in result.metrics["samples"]:
        print(_side_by_side(sample))
    m = result.metrics
    print(
        f"held-out loss on the owner's real replies: base {m['base_eval_loss']:.3f} "
        f"(perplexity {m['base_eval_ppl']:.0f}) -> twin {m['eval_loss']:.3f} "
        f"(perplexity {m['eval_ppl']:.0f})\n"
    )
    if "fidelity" in m:
        print("does it sound like the owner? (twin eval; full report with charts in")
        print(f"  {result.path / 'eval' / 'report.md'})")
        print(textwrap.indent(headline_table(m), "  ") + "\n")
    print(
        "Go on:\n"
        f"  twin chat --config {config_path}        talk to the twin in the terminal\n"
        "  Your own history: export it from Telegram Desktop (Machine-readable JSON), then\n"
        "    twin ingest export PATH/result.json && twin dataset && twin train\n"
        "  or pull it from your account: export TWIN_API_ID=... TWIN_API_HASH=... (from\n"
        "    my.telegram.org), then twin ingest telegram\n"
        "  Telegram: create a bot with @BotFather, put your user id in [telegram] admins in\n"
        "    config.toml, then export TWIN_BOT_TOKEN=... and run twin serve: it answers as\n"
        "    you and retrains itself every night (twin retrain does one refresh by hand)."
    )
    return 0


def _side_by_side(sample: dict[str, str]) -> str:
    def block(label: str, text: str) -> str:
        lines = textwrap.wrap(text.replace("\n", " / "), 70) or ["(nothing)"]
        return f"  {label:<6}" + "\n        ".join(lines)

    return "\n".join(
        [
            block("them", sample["message"]),
            block("base", sample["base"]),
            block("twin", sample["twin"]),
            block("real", sample["real"]),
            "",
        ]
    )
