"""What the twin remembers for a reply: THE retrieval, for training and for serving alike.

The dataset asks, for each example, what that reply could have recalled when it was written
(only messages older than its conversation, from its own chat when `[memory] scope = "chat"`);
the bot and `twin chat` ask the same for a reply now. Both get the block from `Memory.recall`
and put it in the system turn with `twin.core.conversation.with_memory`, so the twin learns to
read exactly what it is served.

One difference is deliberate (retrieval-augmented fine-tuning, RAFT): where a trained reply
restates something the owner said earlier in scope and the search for its question missed
that message, the example's block holds it anyway (`Memory.source_of`, `recall(holding=)`).
The other examples keep what the search found, which mostly does not hold their answer. The
twin so learns both to take a fact from its block and to leave a block alone that has none.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ingest.encoder import Embedder, SentenceEncoder
from ingest.memory import IndexSummary, MemoryIndex, Recalled, open_memory
from ingest.pii import PiiScrubber
from ingest.selection import chat_selection
from ingest.store import Owner, Store
from twin.core.config import Config
from twin.core.conversation import ChatMessage, Remembered, memory_block

MEMORY_FILE = "memory.db"
# A reply is recalled for the end of the message it answers: a merged burst can run to 20
# messages of 4096 characters, all of which would be masked and embedded for every reply, and
# the words nearest the reply are the ones it answers.
QUERY_CHARS = 500


def memory_path(config: Config) -> Path:
    return config.data_dir / MEMORY_FILE


@dataclass(frozen=True)
class BlockFit:
    """How a served prompt holds the memory block, by the served tokenizer (the bot's): does
    a block leave the prompt room for a message, and what does a line of it cost."""

    fits: Callable[[str], bool]
    count_tokens: Callable[[str], int]


@dataclass(frozen=True)
class Recall:
    found: list[Recalled]  # what the search returned, best first
    block: str  # as it goes into the system turn ("" when nothing)


class Memory:
    """An open memory index with its embedder, for one language and one set of settings.

    Blocks are built by the tokenizer-free estimate, as the dataset builds them. With `fit`
    (serving), a block that by the served tokenizer leaves no room for a message (emoji or
    CJK text: a token or more a character, not a third) is built again by the tokenizer's
    count, or left out: the chat still gets its reply. Any other block is the trained one.
    """

    def __init__(
        self,
        config: Config,
        index: MemoryIndex,
        embedder: Embedder,
        scrubber: PiiScrubber,
        language: str,
        fit: BlockFit | None = None,
    ) -> None:
        self.memory_config = config.memory
        self.index = index
        self.embedder = embedder
        self.scrubber = scrubber
        self.language = language
        self.fit = fit

    def recall(
        self,
        query: str,
        *,
        chat: int | None,
        before: int | None = None,
        holding: Recalled | None = None,
    ) -> Recall:
        """What a reply to `query` in store chat `chat` (None: no chat, e.g. a bare `twin
        chat`) remembers, from entries dated before `before` (None: all). `holding` (the
        dataset's, from `source_of`): an entry the block must hold, in place of the last found
        where the search did not find it."""
        # The index holds masked text; so is every query (idempotent on a masked one).
        found = self.index.search(
            self.scrubber.scrub(query),
            chats=self._scope(chat),
            before=before,
            limit=self.memory_config.max_items,
            embedder=self.embedder,
        )
        if holding is not None and all(_key(r) != _key(holding) for r in found):
            # Where it goes among the others is the entry's own (stable) draw: a twin
            # trained with the answer always first would learn to read the first line only.
            others = found[: max(self.memory_config.max_items - 1, 0)]
            at = zlib.crc32(f"{holding.chat_id}:{holding.message_id}".encode()) % (len(others) + 1)
            found = [*others[:at], holding, *others[at:]]
        remembered = [Remembered(r.text, r.answered) for r in found]
        facts = [fact.text for fact in self.index.facts()]
        block = self.block(remembered, facts)
        if block and self.fit is not None and not self.fit.fits(block):
            block = self.block(remembered, facts, self.fit.count_tokens)
            if not self.fit.fits(block):
                block = ""
        return Recall(found, block)

    def source_of(
        self, reply: str, question: str, *, chat: int | None, before: int | None
    ) -> Recalled | None:
        """The earlier message in scope that `reply` (to `question`) restates, if any
        (ingest.memory.MemoryIndex.source_of): what a training example's block must hold."""
        return self.index.source_of(
            self.scrubber.scrub(reply),
            self.scrubber.scrub(question),
            chats=self._scope(chat),
            before=before,
            embedder=self.embedder,
        )

    def _scope(self, chat: int | None) -> set[int] | None:
        """The chats a reply in `chat` may recall from: that chat alone, or all (None)."""
        if self.memory_config.scope == "chat":
            return {chat} if chat is not None else set()
        return None

    def block(
        self,
        remembered: list[Remembered],
        facts: list[str],
        count_tokens: Callable[[str], int] | None = None,
    ) -> str:
        memory_config = self.memory_config
        return memory_block(
            remembered,
            facts,
            language=self.language,
            scope=memory_config.scope,
            max_tokens=memory_config.max_tokens,
            count_tokens=count_tokens,
        )


def _key(entry: Recalled) -> tuple[int, int]:
    return entry.chat_id, entry.message_id


def memory_query(conversation: list[ChatMessage]) -> str:
    """What a reply is recalled for: the end (`QUERY_CHARS`, from a word's start) of the last
    message by someone else before it."""
    for message in reversed(conversation):
        if message["role"] == "user":
            text = message["content"]
            if len(text) <= QUERY_CHARS:
                return text
            end = text[-QUERY_CHARS:]
            space = next((i for i, c in enumerate(end) if c.isspace()), -1)
            return end[space + 1 :] if 0 <= space < len(end) - 1 else end
    return ""


def scrubber_for(config: Config, owner: Owner | None) -> PiiScrubber:
    phones = (owner.phone,) if owner is not None and owner.phone else ()
    return PiiScrubber(regions=config.dataset.phone_regions, owner_phones=phones)


@contextmanager
def open_recall(
    config: Config,
    store: Store,
    *,
    update: bool = True,
    embedder: Embedder | None = None,
    progress: bool = True,
    fit: BlockFit | None = None,
) -> Iterator[Memory | None]:
    """The memory of `config`'s data dir (None when `[memory] enabled` is false), brought up
    to date with the store first when `update` (incremental: only what is new is indexed).
    `fit`: how the served prompt holds the block (see `Memory`)."""
    if not config.memory.enabled:
        yield None
        return
    scrubber = scrubber_for(config, store.owner())
    embedder = embedder or SentenceEncoder()
    with open_memory(memory_path(config)) as index:
        if update:
            _update(config, store, index, scrubber, embedder, progress)
        language = store.owner_language(config.persona.language)
        yield Memory(config, index, embedder, scrubber, language, fit)


def update_memory(config: Config, store: Store, *, progress: bool = True) -> IndexSummary | None:
    """Index what is new in the store (after an import or a pull); None when memory is off."""
    if not config.memory.enabled:
        return None
    with open_memory(memory_path(config)) as index:
        scrubber = scrubber_for(config, store.owner())
        return _update(config, store, index, scrubber, SentenceEncoder(), progress)


def _update(
    config: Config,
    store: Store,
    index: MemoryIndex,
    scrubber: PiiScrubber,
    embedder: Embedder,
    progress: bool,
) -> IndexSummary:
    return index.update(
        store,
        scrubber,
        embedder,
        select=chat_selection(store, config).uses,
        progress=progress,
    )
