"""The preference stage: pairs (never a reply with itself, masked, scoped), DPO on the tiny
model (the owner's reply gains on the twin's), the choice between SFT alone and SFT +
preference, and what a run records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from ingest.pii import PiiScrubber
from tests.trainer.helpers import make_config
from trainer import preference
from trainer.eval.evaluate import TrainingSamples
from trainer.fit import add_lora
from trainer.metrics import read_metrics
from trainer.model import load_base
from trainer.pairs import Correction, Pair, correction_pairs, encode_pair, history_pairs
from trainer.preference import Figures, choose, run_stage
from trainer.train import train
from twin.core.config import Config
from twin.core.conversation import ChatMessage, block_of, with_block
from twin.core.loading import load_config

SYSTEM: ChatMessage = {"role": "system", "content": "You are Mira. Reply as Mira would."}


def prompt(text: str, system: ChatMessage = SYSTEM) -> list[ChatMessage]:
    return [system, {"role": "user", "content": text}]


def correction(cid: int, verdict: str, draft: str, sent: str | None = None) -> Correction:
    return Correction(cid, 7, verdict, prompt(f"question {cid}"), draft, sent)


def test_a_reply_is_never_paired_with_itself() -> None:
    prompts = [(prompt("a"), "ok ok :)"), (prompt("b"), "lol yes"), (prompt("c"), "nah")]
    pairs = history_pairs(prompts, ["OK  ok :)", "haha no", "  "])
    assert [(p.chosen, p.rejected, p.source) for p in pairs] == [("lol yes", "haha no", "history")]
    same = correction(1, "edited", "see you at 8", "See you at 8")
    assert correction_pairs([same], {}, str, 3) == []


def test_corrections_pair_by_verdict_weighted_up() -> None:
    corrections = [
        correction(1, "edited", "maybe", "yes, at 8!"),
        correction(2, "sent", "sure"),
        correction(3, "liked", "omg yes!!"),
        correction(4, "skipped", "I am an AI"),
        correction(5, "disliked", "As a language model"),
        correction(6, "skipped", "no fresh sample for this one"),
    ]
    fresh = {2: "nah", 3: "meh", 4: "brb", 5: "tbh idk"}
    pairs = correction_pairs(corrections, fresh, str, weight=2)
    got = [(p.correction_id, p.chosen, p.rejected) for p in pairs]
    assert got == [
        (1, "yes, at 8!", "maybe"),
        (1, "yes, at 8!", "maybe"),
        (2, "sure", "nah"),
        (2, "sure", "nah"),
        (3, "omg yes!!", "meh"),
        (3, "omg yes!!", "meh"),
        (4, "brb", "I am an AI"),
        (4, "brb", "I am an AI"),
        (5, "tbh idk", "As a language model"),
        (5, "tbh idk", "As a language model"),
    ]
    assert all(p.source == "correction" for p in pairs)


def test_corrections_are_masked_and_keep_their_own_chat_block() -> None:
    scrub = PiiScrubber(regions=("US",)).scrub
    block_a, block_b = "Remembered: gate code 4417", "Remembered: Bob's birthday"
    mine = Correction(
        1, 100, "edited", with_block(prompt("call me?"), block_a), "ok", "+1 415 555 2671 ok"
    )
    theirs = Correction(2, 200, "edited", with_block(prompt("cake?"), block_b), "no", "yes")
    pairs = correction_pairs([mine, theirs], {}, scrub, 1)
    assert "415" not in pairs[0].chosen and "<PHONE>" in pairs[0].chosen
    assert [block_of(p.prompt) for p in pairs] == [block_a, block_b]
    assert "Bob" not in json.dumps([pairs[0].prompt, pairs[0].chosen, pairs[0].rejected])


def test_choice_keeps_sft_unless_the_stage_helps() -> None:
    sft = Figures(eval_loss=3.0, style_distance=0.20, auc=0.70, semantic_similarity=0.3)
    better = Figures(eval_loss=3.05, style_distance=0.18, auc=0.62)
    assert choose(sft, better)[0]
    assert not choose(sft, Figures(3.07, 0.18, 0.62))[0]  # loss more than 2% worse
    assert not choose(sft, Figures(3.0, 0.21, 0.62))[0]  # style further from the owner
    assert not choose(sft, Figures(3.0, 0.18, 0.70))[0]  # no harder to tell apart
    assert choose(Figures(3.0, 0.2), Figures(3.0, 0.19))[0]  # no AUC: style decides
    assert not choose(Figures(3.0), Figures(2.9))[0]  # no fidelity: nothing to judge by
    kept, why = choose(sft, better)
    assert kept and "0.700 -> 0.620" in why


def stage_config(tmp_path: Path, tiny_base: Path, **preference: Any) -> Config:
    config = make_config(tmp_path, tiny_base)
    return config.with_section(
        "preference",
        **{"learning_rate": 5e-3, "beta": 0.1, "correction_weight": 4, **preference},
    )


def reply_logprob(model: Any, tokenizer: Any, conversation: list[ChatMessage], reply: str) -> float:
    """log p(reply | conversation) under `model`, tokenized as the stage trains it."""
    pair = encode_pair(tokenizer, Pair(conversation, reply, "-", "history"), 256, 16)
    assert pair is not None
    ids = torch.tensor([pair["prompt_ids"] + pair["chosen_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float()
    logprobs = torch.log_softmax(logits, -1)
    start = len(pair["prompt_ids"]) - 1
    targets = ids[0, start + 1 :]
    return float(logprobs[start:].gather(1, targets[:, None]).sum())


def test_the_stage_makes_the_owners_text_likelier_than_the_draft(
    tmp_path: Path, tiny_base: Path
) -> None:
    """An edited draft: after the stage, the owner's text is more likely on that prompt and
    the rejected draft less likely than before. The frozen reference copy is gone after."""
    config = stage_config(tmp_path, tiny_base)
    base = load_base(config)
    model = add_lora(base.model, config, base.plan, base.tokenizer)
    edit = Correction(1, 7, "edited", prompt("dinner at 8?"), "I cannot attend.", "yes!! omw")
    before = [reply_logprob(model, base.tokenizer, edit.prompt, t) for t in (edit.sent, edit.draft)]
    history = TrainingSamples([prompt("coffee?")], ["ok ok :)"], ["I would love to."])
    stage = run_stage(model, base.tokenizer, history, [edit], config, base.plan, 600.0, str)
    after = [reply_logprob(model, base.tokenizer, edit.prompt, t) for t in (edit.sent, edit.draft)]
    assert stage.steps >= 1 and stage.pairs == {"history": 1, "correction": 1}
    assert stage.trained_pairs == 1 + 4 and stage.corrections_used == (1,)
    assert after[0] > before[0], "the owner's text did not become more likely"
    assert after[1] < before[1], "the rejected draft did not become less likely"
    assert list(model.peft_config) == ["default"]
    assert not model.training


def test_the_stage_stops_when_its_budget_is_spent(tmp_path: Path, tiny_base: Path) -> None:
    config = stage_config(tmp_path, tiny_base)
    base = load_base(config)
    model = add_lora(base.model, config, base.plan, base.tokenizer)
    n = 16
    history = TrainingSamples(
        [prompt(f"q{i}") for i in range(n)], ["ok ok :)"] * n, ["I would love to."] * n
    )
    pairs = history_pairs(list(zip(history.prompts, history.real, strict=True)), history.twin)
    encoded = [encode_pair(base.tokenizer, pair, 128, 8) for pair in pairs]
    steps, _, _ = preference._train(
        model, base.tokenizer, [e for e in encoded if e], config, base.plan, 1e-6
    )
    assert steps == 1  # the step under way finishes, no more (8 were planned)
    spent = run_stage(model, base.tokenizer, history, [], config, base.plan, -1.0, str)
    assert spent.steps == 0 and spent.pairs == {"history": n, "correction": 0}


def measured_config(tmp_path: Path, tiny_base: Path) -> Config:
    config = stage_config(tmp_path, tiny_base, budget_share=0.9)
    return config.with_section("eval", on_train=True, max_prompts=6, memorization_prompts=8)


@pytest.mark.parametrize("kept", [True, False])
def test_the_gate_keeps_the_better_and_the_adapter_records_the_stage(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch, kept: bool
) -> None:
    config = measured_config(tmp_path, tiny_base)
    sft_weights: dict[str, torch.Tensor] = {}
    real_stage = preference.run_stage

    def stage_after_noting_sft(model: Any, *args: Any) -> Any:
        sft_weights.update(
            {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        )
        return real_stage(model, *args)

    monkeypatch.setattr("trainer.train.run_stage", stage_after_noting_sft)
    monkeypatch.setattr("trainer.train.choose", lambda sft, after: (kept, "decided by the test"))
    result = train(config, progress=False)
    assert result is not None
    stage = read_metrics(result.path).preference
    assert stage is not None and stage.kept is kept and stage.reason == "decided by the test"
    assert stage.pairs["history"] >= 1 and stage.steps >= 1 and stage.seconds > 0
    assert stage.sft["auc"] is not None and stage.preferred is not None
    assert stage.preferred["eval_loss"] is not None
    chosen = stage.preferred if kept else stage.sft
    assert result.metrics.eval_loss == chosen["eval_loss"]
    from safetensors.torch import load_file

    saved = load_file(result.path / "adapter_model.safetensors")
    assert not any(".ref." in name for name in saved)  # one adapter: the frozen copy is gone
    sft = {name.replace(".default", ""): w for name, w in sft_weights.items()}
    assert sft.keys() == saved.keys()
    unchanged = all(torch.equal(sft[name].to(saved[name].dtype), saved[name]) for name in sft)
    assert unchanged is not kept  # SFT alone stays exactly as it was when the stage is not kept


def test_no_stage_without_the_fidelity_eval(tmp_path: Path, tiny_base: Path) -> None:
    config = stage_config(tmp_path, tiny_base)  # [eval] on_train = false
    result = train(config, progress=False)
    assert result is not None
    stage = result.metrics.preference
    assert stage is not None and not stage.kept and stage.steps == 0
    assert "on_train" in stage.reason
    (tmp_path / "off").mkdir()
    disabled = stage_config(tmp_path / "off", tiny_base, enabled=False)
    off = train(disabled, progress=False)
    assert off is not None and off.metrics.preference is None


def test_a_new_correction_makes_the_next_retrain_worth_running(
    tmp_path: Path, tiny_base: Path
) -> None:
    from trainer.train import training_key

    config = stage_config(tmp_path, tiny_base)
    one = [correction(1, "edited", "maybe", "yes")]
    two = [*one, correction(2, "skipped", "no")]
    assert training_key(config, "d" * 64, one) == training_key(config, "d" * 64, list(one))
    assert training_key(config, "d" * 64, one) != training_key(config, "d" * 64, two)
    off = config.with_section("preference", enabled=False)
    assert training_key(off, "d" * 64, one) == training_key(off, "d" * 64, two)


def test_each_correction_is_trained_first_then_the_rest_shuffled() -> None:
    history = [Pair(prompt(f"h{i}"), "ok", f"no {i}", "history") for i in range(6)]
    corrected = correction_pairs(
        [correction(1, "edited", "maybe", "yes"), correction(2, "edited", "hm", "sure")], {}, str, 3
    )
    order = preference._in_order(history, corrected, seed=1)
    assert [p.correction_id for p in order[:2]] == [1, 2]
    assert sorted(map(id, order)) == sorted(map(id, history + corrected))
    assert [p.source for p in order[2:]] != ["history"] * 6 + ["correction"] * 4  # mixed


def test_a_failing_stage_leaves_sft_alone_exactly(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = measured_config(tmp_path, tiny_base)
    sft_weights: dict[str, torch.Tensor] = {}

    def breaks_halfway(model: Any, *args: Any) -> Any:
        for name, param in model.named_parameters():
            if param.requires_grad:
                sft_weights[name.replace(".default", "")] = param.detach().clone()
                param.data += 1.0  # a half-done update, then the failure
        raise RuntimeError("fused head cannot read the output layer")

    monkeypatch.setattr("trainer.preference._train", breaks_halfway)
    result = train(config, progress=False)
    assert result is not None and result.promoted
    stage = result.metrics.preference
    assert stage is not None and not stage.kept
    assert stage.reason == "failed (RuntimeError: fused head cannot read the output layer)"
    from safetensors.torch import load_file

    saved = load_file(result.path / "adapter_model.safetensors")
    assert all(torch.equal(sft_weights[n].to(t.dtype), t) for n, t in saved.items())


def test_no_stage_for_a_base_whose_turn_markers_are_trained(tmp_path: Path) -> None:
    """Gemma 3 270M trains its turn markers' rows with the adapter; TRL's fused output head
    cannot read them (it failed with an AttributeError on the tied, wrapped head)."""
    from trainer.train import Measured, Run, _why_no_stage

    (tmp_path / "config.toml").write_text('[model]\nbase = "gemma3-270m"\n')
    config = load_config(tmp_path / "config.toml")
    run = Run(config, Any, Any, True)  # type: ignore[arg-type]
    sft = Measured(3.0, None, (), None, None)
    assert "gemma3-270m" in _why_no_stage(run, sft, 100.0)
