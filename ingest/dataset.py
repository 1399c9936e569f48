"""The dialog dataset: from stored messages to chat examples that teach a model the owner's replies.

Rules (each has a test in tests/ingest/test_dataset.py):
- Turns come from twin.core.conversation.build_sessions, the rule the bot serves with: the
  owner's own words are `assistant` turns, everyone else is `user` (in group chats prefixed
  "Name: "); one speaker's messages within `merge_gap_minutes` merge into one turn; a silence
  longer than `session_gap_minutes` starts a new conversation, and no example spans two.
- Forwards, service messages and media without text are never assistant turns; others' media
  becomes a short "[photo]"-style user turn, useful context.
- Long conversations are cut into examples of at most `max_tokens` (estimated), each carrying
  preceding context; replies already trained in an earlier cut come back as context only.
- An example starts with a user turn (after the optional system turn) and ends with the owner's.
- PII is masked before anything is written; exact duplicate examples are dropped; whole
  conversations go to train or eval by a stable hash, so the split does not move between runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ingest.dialog import Conversation, build_conversations
from ingest.peers import GROUP_TYPES
from ingest.pii import PLACEHOLDERS, PiiScrubber
from ingest.recall import Memory, memory_query, open_recall
from ingest.selection import chat_selection
from ingest.store import Store
from twin.core.config import Config
from twin.core.conversation import (
    ChatMessage,
    Turn,
    TurnRules,
    from_first_user,
    persona_prompt,
    with_block,
    with_system_prompt,
)
from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir, write_private_text
from twin.core.tokens import CHARS_PER_TOKEN, TURN_OVERHEAD_TOKENS, estimate_tokens

# Below these, `twin train` refuses to start: too little to learn from, or to judge by.
MIN_TRAIN_EXAMPLES = 8
MIN_EVAL_EXAMPLES = 2
# Measured on the demo persona (README, "How much history"): below this the twin's held-out
# loss and style barely move.
USEFUL_TRAIN_EXAMPLES = 100


@dataclass
class DatasetSummary:
    chats_used: int = 0
    conversations: int = 0
    train: int = 0
    eval: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    masked: int = 0
    # Examples whose memory block holds an earlier message their reply restates (RAFT).
    grounded: int = 0
    sha256: str = ""
    seconds: float = 0.0
    # [ingest] include_chats / exclude_chats entries to look at (ingest.selection).
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return (
            f"dataset: {self.train + self.eval} examples ({self.train} train, {self.eval} eval)"
            f" from {self.conversations} conversations in {self.chats_used} chats;"
            f" {self.masked} PII values masked; {self.grounded} replies restate a message"
            f" their memory block holds; skipped: {skipped or 'nothing'};"
            f" {self.seconds:.1f} s"
        )

    def advice(self) -> str | None:
        """What to tell the owner when the dataset is too small to be worth training on."""
        if self.train < MIN_TRAIN_EXAMPLES or self.eval < MIN_EVAL_EXAMPLES:
            return (
                f"too small to train: {self.train} training and {self.eval} held-out examples "
                f"(`twin train` needs at least {MIN_TRAIN_EXAMPLES} and {MIN_EVAL_EXAMPLES}). "
                "Each example is one of your replies: import more chats (a full-account export, "
                "or `twin ingest telegram`)"
            )
        if self.train < USEFUL_TRAIN_EXAMPLES:
            return (
                f"small: {self.train} training examples. The twin picks up your style from a "
                f"few dozen replies, but gets clearly better with {USEFUL_TRAIN_EXAMPLES}+ "
                "(see the README's 'How much history'): import more chats if you have them"
            )
        return None


def build_dataset(config: Config, store: Store, *, progress: bool = True) -> DatasetSummary:
    """Build and write `dataset/train.jsonl` and `eval.jsonl` from the store."""
    started = time.perf_counter()
    owner = store.owner()
    if owner is None:
        raise TwinError(
            "the store is empty: run `twin ingest export PATH` or `twin ingest telegram`"
        )
    summary = DatasetSummary()
    scrubber = PiiScrubber(
        regions=config.dataset.phone_regions,
        owner_phones=(owner.phone,) if owner.phone else (),
    )
    system = persona_prompt(config, owner.name, store.owner_language(config.persona.language))
    conversations: list[tuple[Conversation, list[list[ChatMessage]]]] = []
    selection = chat_selection(store, config)
    summary.notes = selection.notes()
    with open_recall(config, store, progress=progress) as memory:
        # With memory every example ends at one trained reply, so each reply is trained
        # after exactly the block a reply at that point is served with.
        reserve = config.memory.max_tokens if memory is not None else 0
        budget = config.dataset.max_tokens - (estimate_tokens(system) if system else 0) - reserve
        for chat in store.chats():
            reason = selection.why_unused(chat)
            if reason:
                summary.skipped[reason] += 1
                continue
            used = False
            rules = TurnRules.of(config.dataset, group=chat.type in GROUP_TYPES)
            for conversation in build_conversations(store.messages_of(chat.chat_id), owner, rules):
                for turn in conversation.turns:
                    turn.content, masked = _scrub(turn.content, scrubber)
                    summary.masked += masked
                cuts = cut_examples(conversation.turns, budget, one_reply=memory is not None)
                examples = []
                for turns in cuts:
                    block, grounded = _recalled_block(memory, turns, conversation)
                    summary.grounded += grounded
                    examples.append(with_block(with_system_prompt(system, turns), block))
                if examples:
                    conversations.append((conversation, examples))
                    used = True
            summary.chats_used += used
    summary.conversations = len(conversations)
    train, eval_ = split_conversations(conversations, config)
    train_rows, eval_rows = _dedupe(train, eval_, summary.skipped)
    summary.train, summary.eval = len(train_rows), len(eval_rows)
    summary.sha256 = _write_dataset(config.dataset_dir, train_rows, eval_rows, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def _recalled_block(
    memory: Memory | None, turns: list[ChatMessage], conversation: Conversation
) -> tuple[str, bool]:
    """The example's memory block: what the trained reply could have recalled when it was
    written (entries older than its conversation, from its scope), and the earlier message it
    restates, if any (ingest.recall: retrieval-augmented fine-tuning). And whether there was
    such a message."""
    if memory is None:
        return "", False
    start = int(conversation.turns[0].first_at)
    question, chat = memory_query(turns), conversation.chat_id
    source = memory.source_of(turns[-1]["content"], question, chat=chat, before=start)
    recall = memory.recall(question, chat=chat, before=start, holding=source)
    return recall.block, source is not None and bool(recall.block)


def cut_examples(
    turns: list[Turn], budget: int, *, one_reply: bool = False
) -> list[list[ChatMessage]]:
    """Cut one conversation into examples that start with `user`, end with `assistant` and fit
    `budget` tokens (estimated; the system turn comes on top).

    Each example ends at an owner's reply and carries as much preceding context as fits; unless
    `one_reply`, the replies that follow it come in while they fit. A reply trained in an
    earlier example reappears as context with weight 0, so no reply is learned twice.
    """
    turns = from_first_user(turns)
    while turns and turns[-1].role == "user":
        turns = turns[:-1]
    # cost(a, b) = estimated tokens of turns[a..b] inclusive, from prefix sums.
    prefix = list(itertools.accumulate((estimate_tokens(t.content) for t in turns), initial=0))

    def cost(a: int, b: int) -> int:
        return prefix[b + 1] - prefix[a]

    examples: list[list[ChatMessage]] = []
    trained_upto = -1  # the last assistant turn already trained
    for reply, turn in enumerate(turns):
        if turn.role != "assistant" or reply <= trained_upto:
            continue
        # Context: from the nearest user turn before the reply, back as far as the budget allows.
        begin = max(i for i in range(reply) if turns[i].role == "user")
        for i in range(begin - 1, -1, -1):
            if cost(i, reply) > budget:
                break
            if turns[i].role == "user":
                begin = i
        # Then take in the following replies while they fit.
        end = reply
        for i in range(reply + 1, len(turns)):
            if one_reply or cost(begin, i) > budget:
                break
            if turns[i].role == "assistant":
                end = i
        example = [_message(turns[i], trained=i > trained_upto) for i in range(begin, end + 1)]
        examples.append(_fit(example, budget))
        trained_upto = end
    return examples


def _message(turn: Turn, *, trained: bool) -> ChatMessage:
    message: ChatMessage = {
        "role": "assistant" if turn.role == "assistant" else "user",
        "content": turn.content,
    }
    if turn.role == "assistant" and not trained:
        message["weight"] = 0
    return message


def _fit(example: list[ChatMessage], budget: int) -> list[ChatMessage]:
    """Clip an example whose single exchange alone is over budget: the user turn keeps its
    end (closest to the reply), the reply keeps its start."""
    total = sum(estimate_tokens(m["content"]) for m in example)
    if total <= budget:
        return example
    room_chars = max(budget // len(example) - TURN_OVERHEAD_TOKENS, 8) * CHARS_PER_TOKEN
    clipped: list[ChatMessage] = []
    for m in example:
        text = m["content"]
        if len(text) > room_chars:
            text = text[-room_chars:] if m["role"] == "user" else text[:room_chars]
        clipped.append({**m, "content": text})
    return clipped


def _scrub(text: str, scrubber: PiiScrubber) -> tuple[str, int]:
    clean = scrubber.scrub(text)
    if clean == text:
        return text, 0
    return clean, sum(clean.count(p) - text.count(p) for p in PLACEHOLDERS)


def split_conversations(
    conversations: list[tuple[Conversation, list[list[ChatMessage]]]], config: Config
) -> tuple[list[list[ChatMessage]], list[list[ChatMessage]]]:
    """Whole conversations to train or eval by a stable hash of where they start.

    The hash makes the split deterministic and stable as new messages arrive (old conversations
    keep their side). When the fraction yields too few eval examples and the data allows,
    the lowest-hash train conversations move to eval.
    """
    ranked = sorted(conversations, key=lambda c: _unit_hash(c[0].key))
    total = sum(len(examples) for _, examples in conversations)
    target = min(config.dataset.eval_min_examples, total // 4)
    if config.dataset.eval_fraction == 0:
        target = 0
    eval_keys = {c.key for c, _ in ranked if _unit_hash(c.key) < config.dataset.eval_fraction}
    count = sum(len(e) for c, e in ranked if c.key in eval_keys)
    for conversation, examples in ranked:
        if count >= target:
            break
        if conversation.key not in eval_keys and count + len(examples) < total:
            eval_keys.add(conversation.key)
            count += len(examples)
    train = [e for c, examples in conversations if c.key not in eval_keys for e in examples]
    eval_ = [e for c, examples in conversations if c.key in eval_keys for e in examples]
    return train, eval_


def _unit_hash(key: str) -> float:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _dedupe(
    train: list[list[ChatMessage]], eval_: list[list[ChatMessage]], skipped: Counter[str]
) -> tuple[list[str], list[str]]:
    """Serialise examples and drop exact duplicates (eval first, so eval never repeats train)."""
    seen: set[str] = set()
    out: dict[str, list[str]] = {"eval": [], "train": []}
    for side, examples in (("eval", eval_), ("train", train)):
        for example in examples:
            row = json.dumps({"messages": example}, ensure_ascii=False)
            if row in seen:
                skipped["duplicate examples"] += 1
                continue
            seen.add(row)
            out[side].append(row)
    return out["train"], out["eval"]


def _write_dataset(
    folder: Path, train: list[str], eval_: list[str], summary: DatasetSummary
) -> str:
    """Write both files atomically (a reader never sees half a dataset); return their hash."""
    ensure_private_dir(folder)
    texts = {
        name: "".join(row + "\n" for row in rows)
        for name, rows in (("train.jsonl", train), ("eval.jsonl", eval_))
    }
    for name, text in texts.items():
        write_private_text(folder / name, text)
    sha256 = dataset_sha256(texts)
    stats = {
        "train": summary.train,
        "eval": summary.eval,
        "conversations": summary.conversations,
        "chats": summary.chats_used,
        "masked": summary.masked,
        "skipped": dict(summary.skipped),
        "sha256": sha256,
        "built": int(time.time()),
    }
    write_private_text(folder / "stats.json", json.dumps(stats, indent=1) + "\n")
    return sha256


def dataset_sha256(texts: dict[str, str]) -> str:
    """The dataset's identity: one hash over both files' names and contents. The trainer
    records it with each adapter; the nightly retrain skips training when it is unchanged."""
    digest = hashlib.sha256()
    for name in sorted(texts):
        digest.update(name.encode() + b"\0" + texts[name].encode())
    return digest.hexdigest()


def count_examples(folder: Path) -> int:
    """Examples in the written dataset (0 if none yet)."""
    total = 0
    for name in ("train.jsonl", "eval.jsonl"):
        path = folder / name
        if path.exists():
            with path.open("rb") as f:
                total += sum(1 for line in f if line.strip())
    return total
