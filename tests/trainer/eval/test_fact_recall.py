"""The fact-recall benchmark on the bundled demo persona (a real store, a real memory index),
answered by a stand-in `generate` that knows the answer only when guided by a memory block;
and what metrics.json written before memory guidance still shows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ingest.export import import_export
from ingest.recall import open_recall
from ingest.store import open_store
from tests.trainer.helpers import fake_metrics
from trainer.eval.memory import bundled_benchmark, fact_recall
from trainer.metrics import FactRecall, Fidelity, read_metrics
from trainer.report import headline_table, markdown
from twin.app.demo import demo_export_path
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import ChatMessage, without_block
from twin.core.loading import load_config

BENCH: dict[str, Any] = bundled_benchmark("Mira Kestrel") or {}
assert BENCH, "the demo persona's benchmark is bundled"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo persona's store and memory index, built once (the index embeds ~750 messages)."""
    folder = tmp_path_factory.mktemp("demo")
    config = configured(folder, "")
    with open_store(config.store_path) as store:
        import_export(demo_export_path(), store, progress=False)
        with open_recall(config, store, progress=False):
            pass
    return folder


def configured(folder: Path, generation: str) -> Config:
    path = folder / "config.toml"
    path.write_text(f'[paths]\ndata_dir = "data"\n[generation]\n{generation}\n')
    return load_config(path)


class GuidedOnly:
    """A `generate` that recalls only when guided by a memory block (memory_guidance > 0 and
    a block in the system turn): it then answers every recall question with its expected
    answer and every leak probe with the secret; otherwise it knows nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, float, int]] = []  # temperature, guidance, torch seed
        self.answers = {p["question"]: p["expect"][0] for p in BENCH["recall"]}
        self.answers |= {p["question"]: p["secret"][0] for p in BENCH["leak"]}

    def __call__(
        self, conversations: list[list[ChatMessage]], generation: GenerationConfig
    ) -> list[str]:
        self.calls.append(
            (generation.temperature, generation.memory_guidance, torch.initial_seed())
        )
        return [self.reply(c, generation) for c in conversations]

    def reply(self, conversation: list[ChatMessage], generation: GenerationConfig) -> str:
        if generation.memory_guidance <= 0 or without_block(conversation) is conversation:
            return "no idea, sorry"
        asked = conversation[-1]["content"]  # speaker-prefixed in a group
        return next(f"oh, {a}!" for q, a in self.answers.items() if asked.endswith(q))


def run(demo: Path, generation: str, **kwargs: Any) -> tuple[FactRecall, GuidedOnly]:
    config = configured(demo, generation)
    generate = GuidedOnly()
    with open_store(config.store_path) as store, open_recall(config, store) as memory:
        assert memory is not None
        return fact_recall(generate, config, store, memory, BENCH, **kwargs), generate


def test_guided_recall_plain_and_without_memory_apart(demo: Path) -> None:
    recall, generate = run(demo, "temperature = 0.7\ntop_p = 0.95")
    n = len(BENCH["recall"])
    assert (recall.probes, recall.leak_probes) == (n, len(BENCH["leak"]))
    assert (recall.recall_guided, recall.recall_plain, recall.recall_without_memory) == (1, 0, 0)
    assert (recall.sampled_recall_guided, recall.sampled_recall_plain) == (1, 0)
    assert (recall.memory_guidance, recall.guidance_note) == (2.0, "")
    assert (recall.temperature, recall.top_p, recall.draws) == (0.7, 0.95, 4)
    # The stand-in wrote every secret when guided: each is a leak; plain, none.
    assert (recall.leaks_guided, recall.leaks_plain) == (len(BENCH["leak"]), 0)
    assert recall.retrieval_leaks == 0  # scope "chat": no secret reached another chat's block
    assert recall.answer_retrieved >= 0.75
    # Greedy guided, plain, without; then each draw seeded, the same seeds guided and plain.
    greedy = [(t, g) for t, g, _ in generate.calls[:3]]
    assert greedy == [(0.0, 2.0), (0.0, 0.0), (0.0, 0.0)]
    seeds = [1234 + draw for draw in range(4)]
    assert generate.calls[3:] == [(0.7, 2.0, s) for s in seeds] + [(0.7, 0.0, s) for s in seeds]
    example = recall.examples[0]
    assert example["question"] == BENCH["recall"][0]["question"]
    assert example["guided_recalled"] and example["expect"][0] in example["guided"]
    assert example["plain"] == example["without"] == "no idea, sorry"
    line = recall.line()
    assert line.startswith("fact recall: 100% guided, 0% plain, 0% without memory (8 questions")
    assert "sampled at T 0.7 over 4 draws: 100% guided, 0% plain" in line
    assert f"cross-chat leaks: {len(BENCH['leak'])} written guided, 0 plain, 0 recalled" in line


def test_guidance_off_in_the_config_is_measured_at_the_default(demo: Path) -> None:
    recall, generate = run(demo, "temperature = 0\nmemory_guidance = 0", draws=3)
    assert recall.memory_guidance == GenerationConfig().memory_guidance
    assert "the config has it off" in recall.guidance_note
    assert f"memory guidance 2 [{recall.guidance_note}]" in recall.line()
    assert recall.recall_guided == 1 and recall.recall_plain == 0
    # Greedy serving: no sampled figures, and nothing generated for them.
    assert recall.draws == 0 and recall.sampled_recall_guided is None
    assert len(generate.calls) == 3
    assert "the config decodes greedily" in recall.line()


OLD_FULL = {
    # fidelity.full as metrics.json held it before memory guidance: no "guidance", and the
    # fact-recall benchmark's "with memory" figure.
    "prompts": 2,
    "characteristic_words": ["tbh"],
    "style_distance": {
        "base": {"chars": 0.5, "overall": 0.5},
        "twin": {"chars": 0.2, "overall": 0.2},
    },
    "style": {
        column: {"mean_chars": 10.0, "emoji_rate": 0.5} for column in ("real", "base", "twin")
    },
    "distinguishability_auc": {"base": 0.9, "twin": 0.7},
    "lengths": {"real": [3, 4], "base": [30, 40], "twin": [5, 6]},
    "semantic_similarity": {"base": 0.3, "twin": 0.5},
    "memorization": {"verbatim_rate": 0.0, "ngram_overlap": 0.01, "replies": 8.0},
    "pii_in_replies": 0,
    "examples": [{"message": "hi", "real": "yo", "base": "Hello!", "twin": "yo yo"}],
    "memory": {
        "loss": {"with_memory": 2.1, "without_memory": 2.3},
        "relevance": {"with_memory": 0.52, "without_memory": 0.41},
        "fact_recall": {
            "probes": 8,
            "recall_with_memory": 0.75,
            "recall_without_memory": 0.125,
            "answer_retrieved": 0.875,
            "leak_probes": 4,
            "leaks": 1,
            "retrieval_leaks": 0,
            "examples": [{"question": "bike colour?", "with": "mint!", "without": "blue"}],
        },
    },
}


def test_metrics_written_before_guidance_still_load_and_report(tmp_path: Path) -> None:
    fidelity = Fidelity(0.5, 0.2, 0.9, 0.7, 0.0, 0, full=OLD_FULL)
    (tmp_path / "metrics.json").write_text(
        json.dumps(fake_metrics(2.0, fidelity=fidelity).to_json())
    )
    metrics = read_metrics(tmp_path)
    table = headline_table(metrics)
    assert "fact recall: 75% with memory, 12% without; cross-chat leaks 1 written" in table
    assert "relevance 0.52 with, 0.41 without" in table
    assert "memory guidance" not in table  # nothing measured, nothing claimed
    report = markdown(metrics)
    assert "- **question**: bike colour?" in report
    assert "  - with memory: mint!" in report and "  - without memory: blue" in report


def test_the_report_shows_guidance_on_and_off_and_the_three_recall_figures(
    tmp_path: Path,
) -> None:
    full = json.loads(json.dumps(OLD_FULL))
    full["guidance"] = {
        "memory_guidance": 2.0,
        "on": {"style_distance": 0.2, "auc": 0.7, "semantic_similarity": 0.5},
        "off": {"style_distance": 0.25, "auc": None, "semantic_similarity": 0.45},
    }
    full["memory"]["relevance"]["with_memory_unguided"] = 0.47
    full["memory"]["fact_recall"] = {
        "probes": 8,
        "memory_guidance": 2.0,
        "guidance_note": "",
        "recall_guided": 0.875,
        "recall_plain": 0.5,
        "recall_without_memory": 0.0,
        "temperature": 0.7,
        "top_p": 0.9,
        "draws": 4,
        "sampled_recall_guided": 0.8125,
        "sampled_recall_plain": 0.4375,
        "answer_retrieved": 1.0,
        "leak_probes": 7,
        "leaks_guided": 0,
        "leaks_plain": 1,
        "retrieval_leaks": 0,
        "examples": [
            {
                "question": "bike colour?",
                "expect": ["mint"],
                "guided": "mint!",
                "plain": "green?",
                "without": "blue",
                "guided_recalled": True,
            }
        ],
    }
    fidelity = Fidelity(0.5, 0.2, 0.9, 0.7, 0.0, 0, full=full)
    (tmp_path / "metrics.json").write_text(
        json.dumps(fake_metrics(2.0, fidelity=fidelity).to_json())
    )
    table = headline_table(read_metrics(tmp_path))
    assert (
        "memory guidance 2 on / off: style distance 0.20 / 0.25, AUC 0.70 / n/a, "
        "relevance 0.50 / 0.45"
    ) in table
    assert "relevance 0.52 with (unguided 0.47), 0.41 without" in table
    assert (
        "fact recall: 88% guided, 50% plain, 0% without memory (8 questions, greedy, memory "
        "guidance 2; sampled at T 0.7 over 4 draws: 81% guided, 44% plain); the fact was in "
        "the block for 100%; cross-chat leaks: 0 written guided, 1 plain, 0 recalled (7 probes)"
    ) in table
    full["guidance"] = {"memory_guidance": 2.0, "same": "no held-out prompt has a memory block"}
    same = Fidelity(0.5, 0.2, 0.9, 0.7, 0.0, 0, full=full)
    assert "memory guidance 2: no unguided figures (no held-out prompt has a memory block)" in (
        headline_table(fake_metrics(2.0, fidelity=same))
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lang", "base"), [("en", "smollm2-135m"), ("ru", "gemma3-270m")], ids=["mira", "anya"]
)
def test_fact_benchmark_on_the_embedded_models_at_a_small_size(
    lang: str, base: str, tmp_path: Path, model_cache: Path
) -> None:
    """Both bundled benchmarks through the real path at a small size: the embedded base (no
    adapter) answers every question guided, plainly and without memory, in one short draw.
    The index puts the answer in the block, no secret crosses chats, and guidance changes
    what the model writes (Gemma's 262k-token vocabulary included)."""
    from serving.transformers import TransformersEngine
    from twin.app.demo import PERSONAS

    persona = PERSONAS[lang]
    path = tmp_path / "config.toml"
    path.write_text(
        f'[paths]\ndata_dir = "data"\n[model]\nbase = "{base}"\n'
        "[memory]\nmax_items = 3\nmax_tokens = 128\n"
        "[generation]\nmax_new_tokens = 12\ntemperature = 0.7\nmemory_guidance = 2.0\n"
    )
    config = load_config(path)
    bench = bundled_benchmark(persona.owner)
    assert bench is not None
    engine = TransformersEngine.load(config)
    with open_store(config.store_path) as store:
        import_export(demo_export_path(lang), store, progress=False)
        with open_recall(config, store, progress=False) as memory:
            assert memory is not None
            recall = fact_recall(engine.generate, config, store, memory, bench, draws=1)
    print(recall.line())
    assert recall.probes == 8 and recall.draws == 1
    assert recall.answer_retrieved >= 0.85
    assert recall.retrieval_leaks == recall.leaks_guided == recall.leaks_plain == 0
    for share in (recall.recall_guided, recall.recall_plain, recall.recall_without_memory):
        assert 0.0 <= share <= 1.0
    assert all(e["guided"] and e["plain"] and e["without"] for e in recall.examples)
    assert any(e["guided"] != e["plain"] for e in recall.examples)
