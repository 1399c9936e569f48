"""The conversation format's own rules: the memory block and its one token budget."""

from __future__ import annotations

from twin.core.conversation import (
    ChatMessage,
    Remembered,
    block_of,
    memory_block,
    with_block,
    without_block,
)
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


def test_the_block_sits_on_the_newest_message_and_comes_out_again() -> None:
    block = memory_block([Remembered("see you at 7")], [], language="en", scope="chat",
                         max_tokens=100)  # fmt: skip
    chat: list[ChatMessage] = [
        {"role": "system", "content": "You are Ann."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hey"},
        {"role": "user", "content": "when?"},
    ]
    grounded = with_block(chat, block)
    # Only the newest user turn carries it; the persona prompt and earlier turns stay as they
    # are, so the prompt starts as the chat's previous one did.
    assert grounded[:3] == chat[:3]
    assert grounded[3] == {"role": "user", "content": "when?", "memory": block}
    assert block_of(grounded) == block and block_of(chat) == ""
    assert without_block(grounded) == chat
    assert without_block(chat) is chat and with_block(chat, "") is chat
    # A reply trained after it: the block moves to the user turn before the reply.
    example = with_block([*chat, {"role": "assistant", "content": "at 7"}], block)
    assert example[3].get("memory") == block and "memory" not in example[4]
