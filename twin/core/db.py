"""SQLite files with numbered migrations: the message store (ingest.store) and the bot's
memory (bot.memory) both open theirs here.

Each migration moves the schema from version i to i + 1; the version lives in
PRAGMA user_version. Append new migrations; never edit one that has shipped. A migration runs
in one transaction with its version bump, so a crash mid-migration leaves the old version.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir, make_private_file


def open_database(path: Path, migrations: list[str]) -> sqlite3.Connection:
    """Open (creating if needed) the SQLite file at `path`, private to the owner, in WAL mode
    and migrated to the newest schema. A file that is not a database is a TwinError."""
    ensure_private_dir(path.parent)
    make_private_file(path)
    # isolation_level=None: transactions are BEGIN/COMMIT issued by the code that needs them.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL stays consistent; a power cut may lose the last transaction.
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn, migrations, path)
    except sqlite3.DatabaseError as err:
        conn.close()
        raise TwinError(f"{path}: not a usable SQLite database ({err}); move it away") from None
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: list[str], path: Path) -> None:
    version = schema_version(conn)
    if version > len(migrations):
        raise TwinError(
            f"{path}: schema version {version} is newer than this twin's ({len(migrations)}):"
            " upgrade twin"
        )
    for target in range(version + 1, len(migrations) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(migrations[target - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would commit mid-migration)."""
    parts: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line.split("--", 1)[0] if "--" in line else line
        if sqlite3.complete_statement(buffer):
            parts.append(buffer.strip())
            buffer = ""
    return [p for p in parts if p]
