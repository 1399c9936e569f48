"""What the tests of twin's SQLite files share (tests/ingest/test_store.py, test_memory.py,
tests/bot/test_bot_db.py): a database's schema without its layout, and a database file as a
shipped twin left it, to check that such a file opens unchanged and that a new one gets
exactly its schema."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

_PUNCTUATION_SPACE = re.compile(r"\s*([(),;])\s*")


def schema(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    """(type, name, SQL) of each object in the file, sorted, with the SQL's layout taken out
    (whitespace collapsed, none around brackets and commas). Left out: what SQLite creates by
    itself (sqlite_sequence, and the tables an FTS5 index keeps its data in, whose layout
    depends on the SQLite version)."""
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master"
        " WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    virtual = [name for kind, name, sql in rows if sql.upper().startswith("CREATE VIRTUAL TABLE")]
    return sorted(
        (kind, name, _layout_free(sql))
        for kind, name, sql in rows
        if not (kind == "table" and any(name.startswith(f"{v}_") for v in virtual))
    )


def _layout_free(sql: str) -> str:
    return _PUNCTUATION_SPACE.sub(r"\1", " ".join(sql.split())).rstrip(";")


def shipped_database(path: Path, script: str, version: int) -> None:
    """A database file as a shipped twin left it: `script` (its schema, and any rows) run by
    SQLite itself, at schema version `version`. Nothing of twin.core.db is used to make it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()


def schema_of_script(script: str) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(":memory:")
    conn.executescript(script)
    try:
        return schema(conn)
    finally:
        conn.close()
