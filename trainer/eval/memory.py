"""Is memory worth it? Measured on held-out conversations and on a fact-recall benchmark.

- held-out loss of the owner's real replies with the memory block (as trained and served) and
  without it (the same prompts, block removed): what recalled messages tell the twin;
- the fact-recall benchmark of the bundled demo personas (ingest/data/demo_memory*.json):
  questions asked in a chat about facts the owner mentioned there sessions earlier, answered
  greedily with memory on and off (recall = the expected answer appears in the reply), and
  questions in one chat about secrets told in another: with `[memory] scope = "chat"` a
  secret must never be retrieved (`retrieval_leaks`) nor written (`leaks`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ingest.peers import GROUP_TYPES
from ingest.recall import Memory, memory_query
from ingest.store import Store
from trainer.data import encode_examples
from trainer.generation import generate_replies
from trainer.loss import heldout_loss
from trainer.model import LoadPlan
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import (
    ChatMessage,
    persona_prompt,
    speaker_prefixed,
    with_memory,
    with_system_prompt,
    without_block,
)

BENCHMARKS = ("demo_memory.json", "demo_memory_ru.json")


@dataclass(frozen=True)
class FactRecall:
    probes: int
    recall_with_memory: float  # share of probes whose reply holds the expected answer
    recall_without_memory: float
    answer_retrieved: float  # share of probes whose fact was in the memory block
    leak_probes: int
    leaks: int  # replies (memory on) that wrote a secret told in another chat
    retrieval_leaks: int  # secrets of another chat that reached the memory block
    examples: list[dict[str, str]]  # question, reply with and without memory (for the report)

    def line(self) -> str:
        return (
            f"fact recall: {self.recall_with_memory:.0%} with memory, "
            f"{self.recall_without_memory:.0%} without ({self.probes} questions; the fact was "
            f"recalled for {self.answer_retrieved:.0%}); cross-chat leaks: {self.leaks} written, "
            f"{self.retrieval_leaks} recalled ({self.leak_probes} probes)"
        )


def bundled_benchmark(owner_name: str | None) -> dict[str, Any] | None:
    """The fact-recall benchmark written for the demo persona the store holds, if any."""
    for name in BENCHMARKS:
        path = Path(str(resources.files("ingest") / "data" / name))
        bench = json.loads(path.read_text(encoding="utf-8"))
        if bench["persona"] == owner_name:
            return dict(bench)
    return None


def fact_recall(
    model: Any,
    tokenizer: Any,
    config: Config,
    store: Store,
    memory: Memory,
    bench: dict[str, Any],
) -> FactRecall:
    """Ask every probe twice (memory on, off), greedily, and count what came out."""
    owner = store.owner()
    system = persona_prompt(
        config, owner.name if owner else None, store.owner_language(config.persona.language)
    )
    chats = {chat.chat_id: chat for chat in store.chats()}
    greedy = config.generation.model_copy(update={"temperature": 0.0})
    probes = [(p["chat_id"], p["question"], p) for p in bench["recall"]]
    probes += [(p["probe_chat_id"], p["question"], p) for p in bench["leak"]]
    on: list[list[ChatMessage]] = []
    off: list[list[ChatMessage]] = []
    found: list[set[tuple[int, int]]] = []
    for chat_id, question, _ in probes:
        chat = chats.get(chat_id)
        text = question
        if chat is not None and chat.type in GROUP_TYPES:
            text = speaker_prefixed(_someone_in(store, chat_id, owner), question)
        plain = with_system_prompt(system, [{"role": "user", "content": text}])
        recall = memory.recall(memory_query(plain), chat=chat_id)
        on.append(with_system_prompt(with_memory(system, recall.block), plain[1:]))
        off.append(plain)
        found.append({(r.chat_id, r.message_id) for r in recall.found})
    with_memory_replies = _generate(model, tokenizer, on, greedy)
    without_replies = _generate(model, tokenizer, off, greedy)
    recall_n = len(bench["recall"])
    hits_on = hits_off = retrieved = leaks = retrieval_leaks = 0
    examples = []
    for (chat_id, question, probe), on_reply, off_reply, ids in zip(
        probes, with_memory_replies, without_replies, found, strict=True
    ):
        if "expect" in probe:
            hits_on += _holds(on_reply, probe["expect"])
            hits_off += _holds(off_reply, probe["expect"])
            retrieved += (chat_id, probe["told_in_message_id"]) in ids
            examples.append({"question": question, "with": on_reply, "without": off_reply})
        else:
            leaks += _holds(on_reply, probe["secret"])
            retrieval_leaks += (probe["told_in_chat_id"], probe["told_in_message_id"]) in ids
    return FactRecall(
        probes=recall_n,
        recall_with_memory=hits_on / max(recall_n, 1),
        recall_without_memory=hits_off / max(recall_n, 1),
        answer_retrieved=retrieved / max(recall_n, 1),
        leak_probes=len(bench["leak"]),
        leaks=leaks,
        retrieval_leaks=retrieval_leaks,
        examples=examples,
    )


def loss_with_and_without_memory(
    model: Any,
    tokenizer: Any,
    eval_rows: list[list[ChatMessage]],
    config: Config,
    plan: LoadPlan,
) -> dict[str, float]:
    """Held-out loss per reply token with each example's memory block and without it."""
    stripped = [without_block(example) for example in eval_rows]
    batch, seq = config.train.batch_size, config.train.max_seq_tokens
    return {
        "with_memory": heldout_loss(
            model, tokenizer, encode_examples(tokenizer, eval_rows, seq), batch, plan
        ),
        "without_memory": heldout_loss(
            model, tokenizer, encode_examples(tokenizer, stripped, seq), batch, plan
        ),
    }


def as_json(result: FactRecall) -> dict[str, Any]:
    return asdict(result)


def _generate(
    model: Any, tokenizer: Any, conversations: list[list[ChatMessage]], generation: GenerationConfig
) -> list[str]:
    replies: list[str] = []
    for i in range(0, len(conversations), 16):
        replies += generate_replies(model, tokenizer, conversations[i : i + 16], generation)
    return replies


def _holds(reply: str, keywords: list[str]) -> bool:
    folded = reply.casefold()
    return any(keyword.casefold() in folded for keyword in keywords)


def _someone_in(store: Store, chat_id: int, owner: Any) -> str:
    """A member of a group who would ask: the last one there other than the owner."""
    name = ""
    for message in store.messages_of(chat_id):
        if message.sender_name and (owner is None or not owner.wrote(message)):
            name = message.sender_name
    return name or "Friend"
