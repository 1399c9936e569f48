"""The conversation format's own rules: the memory block and its one token budget."""

from __future__ import annotations

from twin.core.conversation import Remembered, memory_block, with_memory, without_memory
from twin.core.language import phrase


def words(line: str) -> int:
    return len(line.split())


def test_the_memory_block_spends_one_budget_recalled_messages_first_then_facts() -> None:
    remembered = [Remembered("one two"), Remembered("three four five", answered="hi")]
    facts = ["lives in Oslo", "has a cat"]
    # '- "one two"' costs 3, '- "hi" → "three four five"' 6, '- lives in Oslo' 4, '- has a cat' 4
    block = memory_block(
        remembered, facts, language="en", scope="chat", max_tokens=13, count_tokens=words
    )
    assert block.splitlines() == [
        phrase("en", "remembered"),
        '- "one two"',
        '- "hi" → "three four five"',
        phrase("en", "profile"),
        "- lives in Oslo",
    ]
    # A message over what is left stops the recalled messages; facts still get the rest.
    block = memory_block(
        remembered, facts, language="en", scope="all", max_tokens=7, count_tokens=words
    )
    assert block.splitlines() == [
        phrase("en", "remembered_all"),
        '- "one two"',
        phrase("en", "profile"),
        "- lives in Oslo",
    ]
    # Facts stop at the first one that does not fit, as messages do.
    assert memory_block([], ["a b c d e f", "x"], language="en", scope="chat",
                        max_tokens=3, count_tokens=words) == ""  # fmt: skip
    assert memory_block([], [], language="en", scope="chat", max_tokens=100) == ""


def test_the_block_sits_after_the_persona_prompt_and_comes_out_again() -> None:
    block = memory_block([Remembered("see you at 7")], [], language="en", scope="chat",
                         max_tokens=100)  # fmt: skip
    system = with_memory("You are Ann.", block)
    assert system == f"You are Ann.\n\n{block}"
    assert without_memory(system) == "You are Ann."
    assert with_memory("", block) == block
    assert without_memory(block) == ""
