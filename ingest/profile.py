"""The owner's profile: short facts they chose to share with every chat (`twin facts`, `twin
fact add|forget`, and the same through /persona). Candidates are mined from what the owner
said about themself, shown for approval, and never used until approved."""

from __future__ import annotations

from ingest.memory import open_memory
from ingest.recall import memory_path, scrubber_for
from ingest.selection import chat_selection
from ingest.store import open_store
from twin.core.config import Config
from twin.core.errors import TwinError

CANDIDATES = 8


def fact_listing(config: Config) -> str:
    """The approved facts, numbered, then candidates from the history to approve."""
    with open_memory(memory_path(config)) as index:
        facts = index.facts()
        lines = ["Shared with every chat:"] if facts else ["No profile facts yet."]
        lines += [f"{n}. {fact.text}" for n, fact in enumerate(facts, start=1)]
        candidates: list[str] = []
        if config.store_path.exists():
            with open_store(config.store_path) as store:
                scrubber = scrubber_for(config, store.owner())
                # Only chats the dataset may use: never an excluded chat, nor Saved Messages.
                # A listing writes nothing (the bot shows it too): pins are kept by what
                # builds from the store (the dataset, the memory update, the pull).
                uses = chat_selection(store, config, save=False).uses
                candidates = index.profile_candidates(store, scrubber, CANDIDATES, select=uses)
    if candidates:
        lines += ["", "From your history, not shared until you add them:"]
        lines += [f"- {text}" for text in candidates]
        lines += ["Add one with: fact add TEXT"]
    return "\n".join(lines)


def add_fact(config: Config, text: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise TwinError("a fact needs some text, e.g. fact add i'm vegetarian")
    if len(text) > 200:
        raise TwinError(f"a fact is at most 200 characters; this one has {len(text)}")
    with open_memory(memory_path(config)) as index:
        index.add_fact(text)
        count = len(index.facts())
    return f"Shared with every chat from the next reply on ({count} facts). Retrain to teach it."


def forget_fact(config: Config, number: int) -> str:
    with open_memory(memory_path(config)) as index:
        facts = index.facts()
        if not 1 <= number <= len(facts):
            raise TwinError(f"there is no fact {number} (facts: {len(facts)}; see `facts`)")
        index.forget_fact(facts[number - 1].id)
    return f"Forgotten: {facts[number - 1].text}"
