"""The twin's long-term memory: what the owner wrote, searchable by meaning and by words.

One entry per owner message worth recalling (ingest.memory_entries reads them out of the
store): its text and the message it answered (the owner's reply target, else the nearest
earlier message by someone else in the chat), both PII-masked like the dataset, with chat id,
message id and date. `memory.db` (0600, WAL) holds:

- `entries`: the entry rows, each with its embedding (ingest.encoder: USE multilingual v3, 512
  floats) stored as 512 int8 plus one float scale: 516 bytes instead of 2 KB, cosine within
  ~0.01 of float.
- `entries_fts`: an FTS5 index (unicode61, diacritics and case folded, "ё" read as "е") over
  the entry's text and a wider `context` (the message it answered and the dialog messages
  just before it), so a thing named a few messages earlier ("кста я фикус купила" ...
  "назвала его борисом") is found by its name.
- `facts`: profile facts the owner approved, shared with every chat (ingest.profile mines the
  candidates).

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
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ingest.encoder import DIM, Embedder, embed, embedder_name
from ingest.memory_entries import ChatScan, PendingEntry, entries_of
from ingest.pii import PiiScrubber
from ingest.store import Chat, Owner, Store
from twin.core.db import Database, Migration

# Migrations (twin.core.db): append new ones; never change what a shipped one does.


def _m1_index(conn: sqlite3.Connection) -> None:
    """Entries with their vectors, their word index, what has been read, and the facts."""
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # date      unix seconds
    # text      the owner's message, PII masked
    # answered  the message it answered, masked; '' when none
    # context   what came just before it (for word search), masked
    # scale     vector = scale * int8 values
    # vector    the embedding as int8, one byte per dimension
    conn.execute(
        """
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL,
            message_id INTEGER NOT NULL,
            date INTEGER NOT NULL,
            text TEXT NOT NULL,
            answered TEXT NOT NULL,
            context TEXT NOT NULL,
            scale REAL NOT NULL,
            vector BLOB NOT NULL,
            UNIQUE (chat_id, message_id)
        )
        """
    )
    conn.execute("CREATE INDEX entries_by_chat ON entries (chat_id, date)")
    conn.execute(
        """
        CREATE VIRTUAL TABLE entries_fts USING fts5 (
            text, context, content = 'entries', content_rowid = 'id',
            tokenize = 'unicode61 remove_diacritics 2'
        )
        """
    )
    conn.execute("CREATE VIRTUAL TABLE entries_terms USING fts5vocab (entries_fts, 'row')")
    conn.execute(
        """
        CREATE TRIGGER entries_fts_insert AFTER INSERT ON entries BEGIN
            INSERT INTO entries_fts (rowid, text, context)
            VALUES (new.id, replace(replace(new.text, 'ё', 'е'), 'Ё', 'Е'),
                    replace(replace(new.context, 'ё', 'е'), 'Ё', 'Е'));
        END
        """
    )
    conn.execute(
        """
        CREATE TRIGGER entries_fts_delete AFTER DELETE ON entries BEGIN
            INSERT INTO entries_fts (entries_fts, rowid, text, context)
            VALUES ('delete', old.id, replace(replace(old.text, 'ё', 'е'), 'Ё', 'Е'),
                    replace(replace(old.context, 'ё', 'е'), 'Ё', 'Е'));
        END
        """
    )
    # How many store messages of each chat the index has read: a chat whose count has not
    # moved has nothing new. read_until: the newest message date read.
    conn.execute(
        """
        CREATE TABLE chats_read (
            chat_id INTEGER PRIMARY KEY,
            messages INTEGER NOT NULL,
            read_until INTEGER NOT NULL
        )
        """
    )
    # source    'owner' (typed) or 'history' (an approved candidate)
    # approved  unix seconds the owner approved it
    conn.execute(
        """
        CREATE TABLE facts (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL,
            source TEXT NOT NULL,
            approved INTEGER NOT NULL
        )
        """
    )


def _m2_start_over_for_marked_ids(conn: sqlite3.Connection) -> None:
    """The store's chat ids now carry their peer type (ingest.peers): a group's entries were
    filed under its bare id, which is a user's id too. Which chat an old entry belongs to
    cannot be told here, so the index starts empty (facts stay) and the next update fills it
    again from the store, under the new ids."""
    conn.execute("DELETE FROM entries")
    conn.execute("DELETE FROM chats_read")


MIGRATIONS: list[Migration] = [_m1_index, _m2_start_over_for_marked_ids]
SCHEMA_VERSION = len(MIGRATIONS)

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
# How many of the entries most like a reply are looked at for the one it restates.
SOURCE_CANDIDATES = 3

_WORD_RE = re.compile(r"\w+")


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


class MemoryIndex(Database):
    """The recall index (memory.db); `open_memory` opens one."""

    migrations = MIGRATIONS

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
                scan = ChatScan(read_until=read.get(chat.chat_id, (0, None))[1])
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
        scan: ChatScan,
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
        batch: list[PendingEntry] = []
        for pending in entries_of(store, chat_id, owner, known, scan):
            batch.append(pending)
            if len(batch) >= EMBED_BATCH:
                added += self._add(chat_id, batch, scrubber, embedder)
                batch = []
        if batch:
            added += self._add(chat_id, batch, scrubber, embedder)
        return added

    def _add(
        self, chat_id: int, batch: list[PendingEntry], scrubber: PiiScrubber, embedder: Embedder
    ) -> int:
        texts = [scrubber.scrub(p.text) for p in batch]
        answered = [scrubber.scrub(p.answered) if p.answered else "" for p in batch]
        context = [scrubber.scrub(p.context) if p.context else "" for p in batch]
        # The vector is of the owner's words alone; what they answered reaches the search
        # through the word index. Embedding "answered + text" instead, or the whole context,
        # found fewer demo probes (13-14 of 16 against 15 with RRF): a sentence vector of two
        # speakers' lines is about neither.
        vectors = embed(embedder, texts)
        scales, quantised = quantise(vectors)
        rows = [
            (chat_id, p.message_id, p.date, t, a, c, float(s), q.tobytes())
            for p, t, a, c, s, q in zip(
                batch, texts, answered, context, scales, quantised, strict=True
            )
        ]
        with self.transaction():
            # rowcount counts the entries inserted, not the FTS rows their trigger writes.
            added = self.conn.executemany(
                "INSERT OR IGNORE INTO entries (chat_id, message_id, date, text, answered, "
                "context, scale, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            ).rowcount
        return added

    def _forget_chat(self, chat_id: int) -> int:
        with self.transaction():
            cursor = self.conn.execute("DELETE FROM entries WHERE chat_id = ?", (chat_id,))
            self.conn.execute("DELETE FROM chats_read WHERE chat_id = ?", (chat_id,))
        return int(cursor.rowcount)

    def _start_over_if_changed(self, owner: Owner, embedder: Embedder) -> None:
        """Entries of another owner or another embedding model are useless: drop them all."""
        key = {
            # The id when there is one: a display name may change, the person does not.
            "owner": str(owner.user_id) if owner.user_id is not None else f"name:{owner.name}",
            "embedder": embedder_name(embedder),
        }
        meta = dict(self.conn.execute("SELECT key, value FROM meta").fetchall())
        if all(meta.get(k) == v for k, v in key.items()):
            return
        with self.transaction():
            if any(k in meta for k in key):
                self.conn.execute("DELETE FROM entries")
                self.conn.execute("DELETE FROM chats_read")
            self.conn.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", key.items()
            )

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
        if "embedder" in meta and meta["embedder"] != embedder_name(embedder):
            raise ValueError(
                f"{self.path} was built with embedder {meta['embedder']!r}, "
                f"not {embedder_name(embedder)!r}"
            )
        where, params = _scope(chats, before)
        excluded = self._ids_of(exclude)
        depth = RANK_DEPTH + limit
        words = self._word_ranking(query, where, params, excluded, depth)
        vector = embed(embedder, [query])[0]
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

    def source_of(
        self,
        reply: str,
        question: str,
        *,
        chats: Collection[int] | None,
        before: int | None,
        embedder: Embedder,
    ) -> Recalled | None:
        """The earlier message of the owner that `reply` restates, if any: among the entries
        most like the reply (in scope, dated before `before`), the best that shares one of the
        reply's rare words (a name, a place, a number) that the `question` it answers does not
        hold, so the word came from what the owner had said, not from the question. The
        dataset puts it in that reply's memory block (retrieval-augmented fine-tuning)."""
        asked = {fold_word(word) for word in _WORD_RE.findall(question)}
        telling = {
            term
            for term in self._rare_terms(reply)
            if term not in asked and (len(term) > 3 or any(c.isdigit() for c in term))
        }
        if not telling:
            return None
        for entry in self.search(
            reply, chats=chats, before=before, limit=SOURCE_CANDIDATES, embedder=embedder
        ):
            if telling & {fold_word(word) for word in _WORD_RE.findall(entry.text)}:
                return entry
        return None

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
        terms = list(dict.fromkeys(fold_word(word) for word in _WORD_RE.findall(query)))
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


def open_memory(path: Path) -> MemoryIndex:
    """Open (creating if needed) the memory index at `path`, private to the owner, migrated."""
    return MemoryIndex(path)


# ---- vectors ----------------------------------------------------------------------------


def quantise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows as int8 and a per-row float32 scale (row ~= scale * int8 row)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    peak = np.abs(vectors).max(axis=1)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    quantised = np.rint(vectors / scales[:, None]).clip(-127, 127).astype(np.int8)
    return scales, quantised


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


def fold_word(word: str) -> str:
    """A word as the FTS5 tokenizer indexes it, near enough: lower case, "ё" as "е"."""
    return word.casefold().replace("ё", "е")
