"""twin's SQLite files: the message store (ingest.store), the recall index (ingest.memory) and
the bot's chat log (bot.chat_log) are each a `Database`, opened and migrated here.

A migration is a Python function that moves the schema from version i to i + 1, one
`conn.execute` per statement (no SQL is ever split, so nothing can cut a statement at a
`--` in a string). The version lives in PRAGMA user_version, as it always has: a database
at version i runs the migrations after the i-th, each in one transaction with its version
bump, so a crash mid-migration leaves the old version. Append new migrations; never change
what one that has shipped does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar, Self

from twin.core.errors import TwinError
from twin.core.files import ensure_private_dir, make_private_file

Migration = Callable[[sqlite3.Connection], None]


class Database:
    """An open SQLite file of twin's: private to the owner, in WAL mode, migrated on open.

    A store subclasses it with its `migrations` and adds its own queries; opening, closing,
    `with`, transactions and the schema version are here, once.
    """

    migrations: ClassVar[Sequence[Migration]] = ()

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn = open_database(path, self.migrations)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All or nothing: work that fails halfway leaves the file as it was."""
        with transaction(self.conn):
            yield

    def schema_version(self) -> int:
        return schema_version(self.conn)


def open_database(path: Path, migrations: Sequence[Migration]) -> sqlite3.Connection:
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
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], path: Path) -> None:
    version = schema_version(conn)
    if version > len(migrations):
        raise TwinError(
            f"{path}: schema version {version} is newer than this twin's ({len(migrations)}):"
            " upgrade twin"
        )
    while version < len(migrations):
        with transaction(conn):
            # Read again under the write lock: another process opening the same file (the
            # bot and `twin ingest` started together) may have migrated it meanwhile, and a
            # migration run twice fails ("table meta already exists").
            version = schema_version(conn)
            if version < len(migrations):
                migrations[version](conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE (the write lock taken up front, waiting up to busy_timeout for it),
    then COMMIT, or ROLLBACK on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
