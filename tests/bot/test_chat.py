"""`twin chat`: the terminal twin, with the current adapter and the bot's prompt format."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from bot.serving import load_served_twin
from tests.conftest import run_twin
from tests.trainer.test_train import make_config
from trainer.train import train
from twin.chat_format import encode_prompt, with_system_prompt
from twin.generation import generate_replies


def test_terminal_chat_with_current_adapter(tmp_path: Path, tiny_base: Path) -> None:
    config = make_config(tmp_path, tiny_base, max_steps=4)
    version = train(config).version
    result = run_twin(config, "chat", input="hi there\n/reset\nhow are you?\n/quit\n")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"chatting with adapter {version}" in result.stdout
    assert result.stdout.count("you> ") == 4
    assert "(conversation forgotten)" in result.stdout
    assert "twin> " in result.stdout


def test_served_prompt_is_the_training_format(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, tiny_base)
    twin = load_served_twin(config)
    assert twin.version is None  # no adapter yet: the base model answers
    history = [{"role": "user", "content": "Coffee later?"}]
    conversation = with_system_prompt(twin.system_prompt, history)  # type: ignore[arg-type]
    seen: dict[str, Any] = {}
    real_generate = twin.model.generate

    def spy(**kwargs: Any) -> Any:
        seen["ids"] = kwargs["input_ids"][0].tolist()
        return real_generate(**kwargs)

    monkeypatch.setattr(twin.model, "generate", spy)
    generate_replies(twin.model, twin.tokenizer, [conversation], config.generation)
    assert seen["ids"] == encode_prompt(twin.tokenizer, conversation)
    assert twin.system_prompt.startswith("You are the owner.")


def test_batched_replies_equal_one_at_a_time_and_tokenizer_untouched(
    tmp_path: Path, tiny_base: Path
) -> None:
    config = make_config(tmp_path, tiny_base)
    twin = load_served_twin(config)
    side = twin.tokenizer.padding_side
    short = with_system_prompt(twin.system_prompt, [{"role": "user", "content": "hi"}])
    long = with_system_prompt(
        twin.system_prompt, [{"role": "user", "content": "a much longer message " * 8}]
    )
    greedy = dataclasses.replace(config.generation, temperature=0.0, max_new_tokens=6)
    batched = generate_replies(twin.model, twin.tokenizer, [short, long], greedy)
    alone = generate_replies(twin.model, twin.tokenizer, [short], greedy)
    # Batching several chats into one generate call must not change any chat's reply.
    assert batched[0] == alone[0]
    # The tokenizer's own padding side (read by the training collator) is left as it was.
    assert twin.tokenizer.padding_side == side
