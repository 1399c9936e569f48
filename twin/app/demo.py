"""`twin demo`: the whole pipeline, offline, on a bundled sample persona, in a folder of its own.

Imports a Telegram export written for this project (a fictional owner with a very recognisable
style), builds the dataset and the memory index, fine-tunes an embedded model for a short run
on the CPU, then shows the base model's and the twin's replies to held-out messages next to
the owner's real ones, and the twin recalling a fact the owner mentioned weeks earlier.

    twin demo             Mira Kestrel (English), SmolLM2-135M-Instruct (Apache-2.0)
    twin demo --lang ru   Аня Соколова (Russian), Gemma 3 270M (Gemma Terms of Use)
"""

from __future__ import annotations

import textwrap
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ingest.dataset import build_dataset
from ingest.export import import_export
from ingest.recall import open_recall
from ingest.store import open_store
from trainer.metrics import Sample
from trainer.report import headline_table
from trainer.train import TrainResult, train
from twin.core.config import Config
from twin.core.loading import load_config
from twin.core.lock import data_dir_lock


@dataclass(frozen=True)
class Persona:
    lang: str
    owner: str
    export: str  # in ingest/data
    base: str
    model: str  # as the owner reads it
    minutes: str  # how long the whole demo takes on 2 CPU cores, measured
    config: str


_SHARED_SECTIONS = """\
[dataset]
max_tokens = 384

[memory]
max_items = 3
max_tokens = 128

[train]
max_steps = 60
batch_size = 4
learning_rate = 1e-3
max_seq_tokens = 384
checkpoint_steps = 0
sample_replies = 5

[generation]
max_new_tokens = 40
temperature = 0.7
"""

PERSONAS = {
    "en": Persona(
        lang="en",
        owner="Mira Kestrel",
        export="demo_export.json",
        base="smollm2-135m",
        model="SmolLM2-135M-Instruct",
        minutes="about 7",
        config=f"""\
# twin demo: a sample persona's Telegram export, bundled with twin.
[paths]
data_dir = "data"

[model]
base = "smollm2-135m"

{_SHARED_SECTIONS}""",
    ),
    "ru": Persona(
        lang="ru",
        owner="Аня Соколова",
        export="demo_export_ru.json",
        base="gemma3-270m",
        model="Gemma 3 270M (Gemma Terms of Use)",
        minutes="about 8",
        config=f"""\
# twin demo --lang ru: a Russian-speaking sample persona, bundled with twin.
[paths]
data_dir = "data"

[persona]
language = "ru"

[model]
base = "gemma3-270m"

{_SHARED_SECTIONS}""",
    ),
}


def demo_export_path(lang: str = "en") -> Path:
    return Path(str(resources.files("ingest") / "data" / PERSONAS[lang].export))


def run_demo(folder: Path, lang: str = "en") -> int:
    persona = PERSONAS[lang]
    print(
        f"twin demo: {persona.owner}'s sample Telegram history -> dataset and memory -> "
        f"{persona.model} fine-tuned with LoRA for 60 steps on the CPU -> the twin next to the "
        f"real replies. {persona.minutes.capitalize()} minutes on 2 cores (the first run also "
        f"converts the model, once). Everything stays in {folder}/.\n",
        flush=True,
    )
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "config.toml"
    if not config_path.exists():
        config_path.write_text(persona.config, encoding="utf-8")
    config = load_config(config_path)
    with data_dir_lock(config.data_dir, "twin demo"):
        return _run_demo(config, config_path, persona, lang, started)


def _run_demo(
    config: Config, config_path: Path, persona: Persona, lang: str, started: float
) -> int:
    print(f"[1/5] importing the bundled sample export into {config.store_path}", flush=True)
    with open_store(config.store_path) as store:
        print("      " + import_export(demo_export_path(lang), store).line())
        print("[2/5] building the dialog dataset and the memory index", flush=True)
        print("      " + build_dataset(config, store).line())
    print(
        f"[3/5] fine-tuning {persona.model} with LoRA ({config.train.max_steps} steps)", flush=True
    )
    result = train(config)
    assert result is not None
    print("      " + _trained(result))
    if result.metrics.preference is not None:
        print("      " + result.metrics.preference.line())
    print("[4/5] held-out messages: the base model vs the twin vs what the owner really wrote\n")
    for sample in result.metrics.samples:
        print(_side_by_side(sample))
    m = result.metrics
    print(
        f"held-out loss on the owner's real replies: base {m.base_eval_loss:.3f} "
        f"(perplexity {m.base_eval_ppl:.0f}) -> twin {m.eval_loss:.3f} "
        f"(perplexity {m.eval_ppl:.0f})"
    )
    if m.fidelity is not None:
        table = headline_table(m).splitlines()[1:]  # the loss is on the line above
        print("does it sound like the owner? (full report with charts in")
        print(f"  {result.path / 'eval' / 'report.md'})")
        print(textwrap.indent("\n".join(table), "  ") + "\n")
    print("[5/5] memory: questions about facts the owner mentioned weeks earlier", flush=True)
    _show_recall(config, result)
    print(f"\ndone in {(time.perf_counter() - started) / 60:.1f} min.\n")
    print(
        "Go on:\n"
        f"  twin chat --config {config_path}        talk to the twin in the terminal\n"
        f"  twin chat --config {config_path} --chat {_a_chat(lang)} --show-memory\n"
        "                                   ...as in one of its chats, showing what it recalls\n"
        "  Your own history: export it from Telegram Desktop (Machine-readable JSON), then\n"
        "    twin ingest export PATH/result.json && twin dataset && twin train\n"
        "  or pull it from your account: export TWIN_API_ID=... TWIN_API_HASH=... (from\n"
        "    my.telegram.org), then twin ingest telegram\n"
        "  Telegram: create a bot with @BotFather, put your user id in [telegram] admins in\n"
        "    config.toml, then export TWIN_BOT_TOKEN=... and run twin serve: it answers as\n"
        "    you and retrains itself every night (twin retrain does one refresh by hand)."
    )
    return 0


def _a_chat(lang: str) -> int:
    """A chat of the persona where the benchmark asks about a fact told there."""
    from trainer.eval.memory import bundled_benchmark

    bench = bundled_benchmark(PERSONAS[lang].owner)
    assert bench is not None
    return int(bench["recall"][0]["chat_id"])


def _show_recall(config: Config, result: TrainResult) -> None:
    """One recalled fact (the guided reply that holds the answer, where one does; plain and
    without memory beside it), and the benchmark's numbers."""
    from serving.transformers import TransformersEngine
    from trainer.eval.memory import bundled_benchmark, fact_recall

    engine = TransformersEngine.load(config)
    engine.swap(result.path)  # the adapter just trained, promoted or not
    with open_store(config.store_path) as store, open_recall(config, store) as memory:
        owner = store.owner()
        bench = bundled_benchmark(owner.name if owner else None)
        if memory is None or bench is None:
            print("      (no benchmark for this history)")
            return
        recall = fact_recall(engine.generate, config, store, memory, bench)
    shown = next((e for e in recall.examples if e["guided_recalled"]), recall.examples[0])
    print(_block("them", shown["question"]))
    print(_block("twin", shown["guided"]) + "   (memory, guided)")
    print(_block("twin", shown["plain"]) + "   (memory, plain decoding)")
    print(_block("twin", shown["without"]) + "   (without memory)")
    print(f"\n{recall.line()}")


def _trained(result: TrainResult) -> str:
    m = result.metrics
    verdict = "promoted to current" if result.promoted else f"not promoted: {result.reason}"
    return (
        f"adapter {result.version}: {m.run.steps} steps in {m.run.train_seconds:.0f} s, "
        f"{m.run.tokens_per_s:.0f} tokens/s, peak memory {m.run.peak_memory_mb:.0f} MB; {verdict}"
    )


def _block(label: str, text: str) -> str:
    lines = textwrap.wrap(text.replace("\n", " / "), 70) or ["(nothing)"]
    return f"  {label:<6}" + "\n        ".join(lines)


def _side_by_side(sample: Sample) -> str:
    return "\n".join(
        [
            _block("them", sample.message),
            _block("base", sample.base),
            _block("twin", sample.twin),
            _block("real", sample.real),
            "",
        ]
    )
