"""The dialog dataset: from stored messages to chat examples that teach a model the owner's replies.

Rules (each has a test in tests/ingest/test_dataset.py):
- The owner's own words are `assistant` turns; everyone else is `user` (in groups with several
  speakers, prefixed "Name: "). Forwards, service messages and media without text are never
  assistant turns; others' media becomes a short "[photo]"-style user turn, useful context.
- One speaker's consecutive messages within `merge_gap_minutes` merge into one turn, joined by
  newlines: the owner's bursts are part of their style.
- A silence longer than `session_gap_minutes` starts a new conversation; no example spans two.
  Long conversations are cut into examples of at most `max_tokens` (estimated), each carrying
  preceding context; replies already trained in an earlier cut come back as context only.
- An example starts with a user turn (after the optional system turn) and ends with the owner's.
- PII is masked before anything is written; exact duplicate examples are dropped; whole
  conversations go to train or eval by a stable hash, so the split does not move between runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ingest.pii import CARD, EMAIL, IBAN, PHONE, PiiScrubber
from ingest.selection import chat_is_selected
from ingest.store import Chat, Message, Owner, Store
from twin.chat_format import (
    ChatMessage,
    media_placeholder,
    speaker_prefixed,
    system_prompt,
    with_system_prompt,
)
from twin.config import Config
from twin.errors import TwinError
from twin.files import ensure_private_dir, write_private_text

# The dataset is built without loading a tokenizer (that needs the model); 3 characters a token
# is a conservative estimate for chat text (English runs ~4, Cyrillic ~3). The trainer
# truncates by real tokens; this only keeps examples near the budget.
CHARS_PER_TOKEN = 3
TURN_OVERHEAD_TOKENS = 6  # role markers and separators a chat template adds per turn
GROUP_TYPES = frozenset({"private_group", "private_supergroup", "public_supergroup"})
_PLACEHOLDERS = (PHONE, EMAIL, CARD, IBAN)


@dataclass
class Turn:
    role: str  # "user" or "assistant"
    speaker: str  # who wrote it: "owner" or the other person's id / name
    name: str  # display name, for group prefixes
    content: str
    first_id: int
    last_date: int


@dataclass
class Conversation:
    chat_id: int
    turns: list[Turn]

    @property
    def key(self) -> str:
        return f"{self.chat_id}:{self.turns[0].first_id}"


@dataclass
class DatasetSummary:
    chats_used: int = 0
    conversations: int = 0
    train: int = 0
    eval: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    masked: int = 0
    sha256: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        return (
            f"dataset: {self.train + self.eval} examples ({self.train} train, {self.eval} eval)"
            f" from {self.conversations} conversations in {self.chats_used} chats;"
            f" {self.masked} PII values masked; skipped: {skipped or 'nothing'};"
            f" {self.seconds:.1f} s"
        )


def build_dataset(config: Config, store: Store) -> DatasetSummary:
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
    system = persona_prompt(config, owner)
    conversations: list[tuple[Conversation, list[list[ChatMessage]]]] = []
    for chat in store.chats():
        reason = _why_chat_unused(chat, config)
        if reason:
            summary.skipped[reason] += 1
            continue
        used = False
        for conversation in build_conversations(
            store.messages_of(chat.chat_id), owner, config, is_group=chat.type in GROUP_TYPES
        ):
            for turn in conversation.turns:
                turn.content, masked = _scrub(turn.content, scrubber)
                summary.masked += masked
            examples = cut_examples(conversation.turns, system, config.dataset.max_tokens)
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


def persona_prompt(config: Config, owner: Owner | None) -> str:
    """The system prompt of training examples; the bot serves with the very same one."""
    name = config.persona.name or (owner.name if owner else None) or "the owner"
    return system_prompt(config.persona.system_prompt, name)


def _why_chat_unused(chat: Chat, config: Config) -> str | None:
    if not chat_is_selected(chat, config.ingest.include_chats, config.ingest.exclude_chats):
        return "chats excluded by config"
    # Exports of a single chat may carry no type: such a chat is a conversation, so use it.
    if chat.type is not None and chat.type not in config.dataset.chat_types:
        return f"{chat.type} chats"
    return None


def build_conversations(
    messages: Iterable[Message], owner: Owner, config: Config, *, is_group: bool
) -> Iterator[Conversation]:
    """Group a chat's messages (in time order) into conversations of merged turns."""
    merge_gap = config.dataset.merge_gap_minutes * 60
    session_gap = config.dataset.session_gap_minutes * 60
    turns: list[Turn] = []
    chat_id = 0
    for message in messages:
        chat_id = message.chat_id
        turn = _turn_of(message, owner)
        if turn is None:
            continue
        if turns and message.date - turns[-1].last_date > session_gap:
            yield _finish(chat_id, turns, is_group)
            turns = []
        last = turns[-1] if turns else None
        if last and last.speaker == turn.speaker and message.date - last.last_date <= merge_gap:
            last.content += "\n" + turn.content
            last.last_date = message.date
        else:
            turns.append(turn)
    if turns:
        yield _finish(chat_id, turns, is_group)


def _turn_of(message: Message, owner: Owner) -> Turn | None:
    """The turn a single message contributes, or None when it is not part of the dialog."""
    if message.kind != "message":
        return None
    text = message.text.strip()
    if owner.wrote(message):
        # Only the owner's own typed words teach the twin: not what they forwarded, not media.
        if message.forwarded_from or not text:
            return None
        return Turn("assistant", "owner", owner.name or "", text, message.message_id, message.date)
    if not text:
        if message.media_type is None:
            return None
        text = media_placeholder(message.media_type)
    speaker = str(message.sender_id if message.sender_id is not None else message.sender_name)
    name = message.sender_name or "Deleted Account"
    return Turn("user", speaker, name, text, message.message_id, message.date)


def _finish(chat_id: int, turns: list[Turn], is_group: bool) -> Conversation:
    speakers = {t.speaker for t in turns if t.role == "user"}
    if is_group and len(speakers) > 1:
        for turn in turns:
            if turn.role == "user":
                turn.content = speaker_prefixed(turn.name, turn.content)
    return Conversation(chat_id, turns)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + TURN_OVERHEAD_TOKENS


def cut_examples(turns: list[Turn], system: str, max_tokens: int) -> list[list[ChatMessage]]:
    """Cut one conversation into examples that start with `user`, end with `assistant` and fit.

    Each example ends at an owner's reply and carries as much preceding context as fits. A
    reply trained in an earlier example reappears as context with weight 0, so no reply is
    learned twice.
    """
    start = next((i for i, t in enumerate(turns) if t.role == "user"), len(turns))
    turns = turns[start:]  # an owner's opener with nothing before it is not a reply
    while turns and turns[-1].role == "user":
        turns = turns[:-1]
    budget = max_tokens - (estimate_tokens(system) if system else 0)
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
            if cost(begin, i) > budget:
                break
            if turns[i].role == "assistant":
                end = i
        example = [_message(turns[i], trained=i > trained_upto) for i in range(begin, end + 1)]
        examples.append(with_system_prompt(system, _fit(example, budget)))
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
    return clean, sum(clean.count(p) - text.count(p) for p in _PLACEHOLDERS)


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
