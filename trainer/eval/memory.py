"""Is memory worth it? Measured on held-out conversations and on a fact-recall benchmark.

- held-out loss of the owner's real replies with the memory block (as trained and served) and
  without it (the same prompts, block removed): what recalled messages tell the twin;
- the fact-recall benchmark of the bundled demo personas (ingest/data/demo_memory*.json):
  questions asked in a chat about facts the owner mentioned there sessions earlier (recall =
  the expected answer appears in the reply), answered with memory and memory guidance, with
  memory decoded plainly, and without memory; greedily, then at the serving temperature over
  a few seeded draws. And questions in one chat about secrets told in another: with
  `[memory] scope = "chat"` a secret must never be retrieved (`retrieval_leaks`) nor written
  (`leaks_guided`, `leaks_plain`).

The benchmark generates through a `Generate` function, so the same code measures the
transformers model (batches of `generate_replies`) and a serving engine (`engine.generate`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ingest.peers import GROUP_TYPES
from ingest.recall import Memory, memory_query
from ingest.store import Store
from trainer.data import encode_examples
from trainer.loss import heldout_loss
from trainer.metrics import FactRecall
from trainer.model import LoadPlan
from twin.core.config import Config, GenerationConfig
from twin.core.conversation import (
    ChatMessage,
    persona_prompt,
    speaker_prefixed,
    with_block,
    with_system_prompt,
    without_block,
)

# The replies to a list of conversations, decoded with the given settings.
Generate = Callable[[list[list[ChatMessage]], GenerationConfig], list[str]]

BENCHMARKS = ("demo_memory.json", "demo_memory_ru.json")


def bundled_benchmark(owner_name: str | None) -> dict[str, Any] | None:
    """The fact-recall benchmark written for the demo persona the store holds, if any."""
    for name in BENCHMARKS:
        path = Path(str(resources.files("ingest") / "data" / name))
        bench = json.loads(path.read_text(encoding="utf-8"))
        if bench["persona"] == owner_name:
            return dict(bench)
    return None


def fact_recall(
    generate: Generate,
    config: Config,
    store: Store,
    memory: Memory,
    bench: dict[str, Any],
    *,
    draws: int = 4,
) -> FactRecall:
    """Ask every recall question with memory and guidance, with memory decoded plainly, and
    without memory, greedily; then with memory (guided, plain) at the config's temperature
    and top_p, `draws` times, each draw seeded (torch.manual_seed) so the figure is the same
    run to run. The leak probes are asked greedily with memory (guided and plain)."""
    owner = store.owner()
    system = persona_prompt(
        config, owner.name if owner else None, store.owner_language(config.persona.language)
    )
    chats = {chat.chat_id: chat for chat in store.chats()}
    configured = config.generation
    guidance, note = configured.memory_guidance, ""
    if guidance <= 0:
        # Off in the config: the guided figure is still worth having (is guidance worth
        # turning on?), at the value a user would get by default.
        guidance = GenerationConfig.model_fields["memory_guidance"].default
        note = "the default; the config has it off"
    guided = configured.model_copy(update={"temperature": 0.0, "memory_guidance": guidance})
    plain = guided.model_copy(update={"memory_guidance": 0.0})
    recall_probes = bench["recall"]
    leak_probes = bench["leak"]
    on: list[list[ChatMessage]] = []
    off: list[list[ChatMessage]] = []
    found: list[set[tuple[int, int]]] = []
    questions = [(p["chat_id"], p["question"]) for p in recall_probes]
    questions += [(p["probe_chat_id"], p["question"]) for p in leak_probes]
    for chat_id, question in questions:
        chat = chats.get(chat_id)
        text = question
        if chat is not None and chat.type in GROUP_TYPES:
            text = speaker_prefixed(_someone_in(store, chat_id, owner), question)
        bare = with_system_prompt(system, [{"role": "user", "content": text}])
        recall = memory.recall(memory_query(bare), chat=chat_id)
        on.append(with_block(bare, recall.block))
        off.append(bare)
        found.append({(r.chat_id, r.message_id) for r in recall.found})
    n = len(recall_probes)
    # Without memory only the recall questions: a leak needs the other chat's words.
    guided_replies = generate(on, guided)
    plain_replies = generate(on, plain)
    without_replies = generate(off[:n], plain)
    sampled_guided = sampled_plain = None
    if configured.temperature > 0 and draws > 0:
        sampling = configured.model_copy(update={"memory_guidance": guidance})
        sampled_guided = _sampled_recall(generate, on[:n], sampling, recall_probes, draws, config)
        sampling = configured.model_copy(update={"memory_guidance": 0.0})
        sampled_plain = _sampled_recall(generate, on[:n], sampling, recall_probes, draws, config)
    else:
        draws = 0  # greedy serving: a sampled figure would repeat the greedy one
    examples = [
        {
            "question": probe["question"],
            "expect": list(probe["expect"]),
            "guided": g,
            "plain": p,
            "without": w,
            "guided_recalled": _holds(g, probe["expect"]),
        }
        for probe, g, p, w in zip(
            recall_probes, guided_replies[:n], plain_replies[:n], without_replies, strict=True
        )
    ]
    return FactRecall(
        probes=n,
        memory_guidance=guidance,
        guidance_note=note,
        recall_guided=_share(guided_replies[:n], recall_probes),
        recall_plain=_share(plain_replies[:n], recall_probes),
        recall_without_memory=_share(without_replies, recall_probes),
        temperature=configured.temperature,
        top_p=configured.top_p,
        draws=draws,
        sampled_recall_guided=sampled_guided,
        sampled_recall_plain=sampled_plain,
        answer_retrieved=sum(
            (p["chat_id"], p["told_in_message_id"]) in ids
            for p, ids in zip(recall_probes, found[:n], strict=True)
        )
        / max(n, 1),
        leak_probes=len(leak_probes),
        leaks_guided=_leaks(guided_replies[n:], leak_probes),
        leaks_plain=_leaks(plain_replies[n:], leak_probes),
        retrieval_leaks=sum(
            (p["told_in_chat_id"], p["told_in_message_id"]) in ids
            for p, ids in zip(leak_probes, found[n:], strict=True)
        ),
        examples=examples,
    )


def _sampled_recall(
    generate: Generate,
    conversations: list[list[ChatMessage]],
    generation: GenerationConfig,
    probes: list[dict[str, Any]],
    draws: int,
    config: Config,
) -> float:
    """Recall at a sampling temperature, averaged over `draws` draws; draw k is seeded with
    the training seed + k, the same for guided and plain, so both meet the same luck."""
    total = 0.0
    for draw in range(draws):
        torch.manual_seed(config.train.seed + draw)
        total += _share(generate(conversations, generation), probes)
    return total / draws


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


def _share(replies: list[str], probes: list[dict[str, Any]]) -> float:
    """The share of recall probes whose reply holds the expected answer."""
    hits = sum(_holds(r, p["expect"]) for r, p in zip(replies, probes, strict=True))
    return hits / max(len(probes), 1)


def _leaks(replies: list[str], probes: list[dict[str, Any]]) -> int:
    return sum(_holds(r, p["secret"]) for r, p in zip(replies, probes, strict=True))


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
