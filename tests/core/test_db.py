"""twin.core.db: migrations as functions numbered by PRAGMA user_version, on real SQLite files.
(Each store's tests check its own shipped schema with tests/core/helpers.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.core.helpers import schema_of_script
from twin.core.db import Database, Migration, open_database
from twin.core.errors import TwinError

# ---- toy migrations ----------------------------------------------------------------------


def _m1_notes(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
    # What a line-based SQL splitter cut at: "--" and ";" inside string literals, and a
    # trigger whose body holds statements of its own.
    conn.execute("INSERT INTO notes (text) VALUES ('a -- not a comment; nor the end')")
    conn.execute(
        """
        CREATE TRIGGER notes_trimmed AFTER INSERT ON notes BEGIN
            UPDATE notes SET text = trim(text) WHERE id = new.id;
        END
        """
    )


def _m2_tags(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT '--'")


TOY: list[Migration] = [_m1_notes, _m2_tags]


class Notes(Database):
    migrations = TOY

    def add(self, text: str) -> None:
        self.conn.execute("INSERT INTO notes (text) VALUES (?)", (text,))

    def texts(self) -> list[str]:
        return [text for (text,) in self.conn.execute("SELECT text FROM notes ORDER BY id")]


def test_a_fresh_file_is_private_in_wal_mode_and_at_the_newest_version(tmp_path: Path) -> None:
    path = tmp_path / "data" / "notes.db"
    with Notes(path) as notes:
        assert notes.schema_version() == 2
        assert notes.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert notes.path == path
    assert (path.stat().st_mode & 0o777) == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_dashes_and_semicolons_in_a_string_are_the_strings(tmp_path: Path) -> None:
    with Notes(tmp_path / "notes.db") as notes:
        assert notes.texts() == ["a -- not a comment; nor the end"]
        notes.add("  spaced  ")  # the trigger ran whole
        assert notes.texts()[-1] == "spaced"
        tag = notes.conn.execute("SELECT tag FROM notes").fetchone()[0]
    assert tag == "--"


def test_an_older_file_runs_only_the_migrations_after_its_version(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    open_database(path, TOY[:1]).close()
    ran: list[str] = []

    def m2(conn: sqlite3.Connection) -> None:
        ran.append("m2")
        _m2_tags(conn)

    open_database(path, [_m1_notes, m2]).close()
    open_database(path, [_m1_notes, m2]).close()  # at the newest version: nothing runs
    assert ran == ["m2"]
    with Notes(path) as notes:
        assert notes.schema_version() == 2 and notes.texts() == ["a -- not a comment; nor the end"]


def test_a_migration_that_fails_leaves_the_file_at_its_old_version(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    open_database(path, TOY[:1]).close()

    def broken(conn: sqlite3.Connection) -> None:
        _m2_tags(conn)
        conn.execute("INSERT INTO nowhere VALUES (1)")

    with pytest.raises(TwinError, match="not a usable SQLite database"):
        open_database(path, [_m1_notes, broken])
    conn = sqlite3.connect(path)  # the ALTER TABLE was rolled back with the failure
    columns = [row[1] for row in conn.execute("PRAGMA table_info(notes)")]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1 and "tag" not in columns
    conn.close()
    with Notes(path) as notes:  # and the next open takes the step again
        assert notes.schema_version() == 2


def test_a_file_newer_than_this_twin_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    open_database(path, TOY).close()
    with pytest.raises(TwinError, match=r"schema version 2 is newer than this twin's \(1\)"):
        open_database(path, TOY[:1])


def test_a_file_that_is_no_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"not sqlite" * 200)
    with pytest.raises(TwinError, match=r"notes\.db: not a usable SQLite database"):
        Notes(path)


def test_a_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    with Notes(tmp_path / "notes.db") as notes:
        with pytest.raises(RuntimeError), notes.transaction():
            notes.add("kept?")
            raise RuntimeError("halfway")
        with notes.transaction():
            notes.add("kept")
        assert notes.texts()[1:] == ["kept"]


def test_schema_ignores_layout_and_what_sqlite_creates_itself() -> None:
    one = schema_of_script(
        "CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT,\n  b TEXT);"
        "CREATE VIRTUAL TABLE f USING fts5 (b);"
    )
    other = schema_of_script(
        "CREATE TABLE t ( a INTEGER PRIMARY KEY AUTOINCREMENT , b TEXT );"
        "CREATE VIRTUAL TABLE f USING fts5 ( b );"
    )
    assert (
        one
        == other
        == [
            ("table", "f", "CREATE VIRTUAL TABLE f USING fts5(b)"),
            ("table", "t", "CREATE TABLE t(a INTEGER PRIMARY KEY AUTOINCREMENT,b TEXT)"),
        ]
    )


def test_two_processes_opening_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """The bot and `twin ingest` started together both find a new file at version 0: the
    second waits for the first's migration and must not run it again."""
    import threading

    path = tmp_path / "shared.db"
    first_inside, runs = threading.Event(), []

    def create(conn: sqlite3.Connection) -> None:
        runs.append(threading.current_thread().name)
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        first_inside.set()
        threading.Event().wait(0.3)  # the other opener reads the version meanwhile

    errors: list[BaseException] = []

    def opener() -> None:
        try:
            open_database(path, [create]).close()
        except BaseException as err:  # the test reports it
            errors.append(err)

    one = threading.Thread(target=opener, name="bot")
    one.start()
    first_inside.wait(5)
    two = threading.Thread(target=opener, name="ingest")
    two.start()
    one.join()
    two.join()
    assert errors == [] and runs == ["bot"]
