"""`twin chat`: the terminal twin, with the current adapter and the bot's prompt format."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from serving.twin import load_served_twin
from tests.bot.helpers import copy_adapters
from tests.trainer.helpers import make_config
from trainer.generation import generate_replies
from twin.app.cli import main
from twin.core.chat_format import encode_prompt
from twin.core.conversation import with_system_prompt


def test_terminal_chat_with_current_adapter(
    tmp_path: Path,
    tiny_base: Path,
    trained_adapters: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(tmp_path, tiny_base)
    version, _ = copy_adapters(trained_adapters, config)
    typed = iter(["hi there", "/reset", "how are you?", "/quit"])
    prompts: list[str] = []

    def keyboard(prompt: str) -> str:
        prompts.append(prompt)
        return next(typed)

    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", keyboard)
    assert main(["chat", "--config", str(config.source)]) == 0
    out = capsys.readouterr().out
    assert f"chatting with adapter {version}" in out
    assert prompts == ["you> "] * 4
    assert "(conversation forgotten)" in out
    assert out.count("twin> ") >= 2


def test_chat_answers_stdin_a_message_a_line_as_json(
    tmp_path: Path,
    tiny_base: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = make_config(tmp_path, tiny_base)
    monkeypatch.setattr("sys.stdin", io.StringIO("hi there\n\nhow are you?\n"))
    assert main(["--config", str(config.source), "chat", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["hi there", "how are you?"]
    assert all(isinstance(json.loads(line)["reply"], str) for line in lines)


def test_served_prompt_is_the_training_format(
    tmp_path: Path, tiny_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, tiny_base)
    twin = load_served_twin(config)
    assert twin.version is None  # no adapter yet: the base model answers
    history = [{"role": "user", "content": "Coffee later?"}]
    conversation = with_system_prompt(twin.system_prompt, history)  # type: ignore[arg-type]
    seen: dict[str, Any] = {}
    real_generate = twin.engine.model.generate

    def spy(**kwargs: Any) -> Any:
        seen["ids"] = kwargs["input_ids"][0].tolist()
        return real_generate(**kwargs)

    monkeypatch.setattr(twin.engine.model, "generate", spy)
    generate_replies(twin.engine.model, twin.tokenizer, [conversation], config.generation)
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
    greedy = config.generation.model_copy(update={"temperature": 0.0, "max_new_tokens": 6})
    batched = generate_replies(twin.engine.model, twin.tokenizer, [short, long], greedy)
    alone = generate_replies(twin.engine.model, twin.tokenizer, [short], greedy)
    # Batching several chats into one generate call must not change any chat's reply.
    assert batched[0] == alone[0]
    # The tokenizer's own padding side (read by the training collator) is left as it was.
    assert twin.tokenizer.padding_side == side


def test_chat_as_in_one_chat_recalls_that_chat_and_shared_facts_only(
    tmp_path: Path,
    tiny_base: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ingest.export import import_export
    from ingest.recall import update_memory
    from ingest.store import open_store
    from trainer.eval.memory import bundled_benchmark
    from twin.app.demo import demo_export_path

    config = make_config(tmp_path, tiny_base)
    with open_store(config.store_path) as store:
        import_export(demo_export_path(), store, progress=False)
        update_memory(config, store, progress=False)
    bench = bundled_benchmark("Mira Kestrel")
    assert bench is not None
    told = bench["recall"][0]  # a fact told in one chat, asked about there
    secret = bench["leak"][0]  # a secret told in one chat, asked for in another
    args = ["--config", str(config.source)]
    assert main([*args, "fact", "add", "i'm vegetarian"]) == 0

    def ask(chat: int, question: str) -> dict[str, Any]:
        capsys.readouterr()
        monkeypatch.setattr("sys.stdin", io.StringIO(question + "\n"))
        assert main([*args, "chat", "--chat", str(chat), "--show-memory", "--json"]) == 0
        return dict(json.loads(capsys.readouterr().out.splitlines()[-1]))

    answer = ask(told["chat_id"], told["question"])
    found = {(m["chat"], m["message_id"]) for m in answer["memory"]}
    assert (told["chat_id"], told["told_in_message_id"]) in found
    assert {chat for chat, _ in found} == {told["chat_id"]}  # this chat's words only
    assert "i'm vegetarian" in answer["memory_block"]  # the profile reaches every chat
    probe = ask(secret["probe_chat_id"], secret["question"])
    assert all(m["chat"] == secret["probe_chat_id"] for m in probe["memory"])
    assert all(word not in probe["memory_block"] for word in secret["secret"])
    assert "i'm vegetarian" in probe["memory_block"]
    assert main([*args, "chat", "--chat", "424242"]) == 1  # not a chat of this history
