"""The journal of a bulk run: which items and instances are done, in SQLite beside the output.

A run started again (after a crash, a SIGKILL, Ctrl-C) reads it to skip what is done and to
fetch only the missing instances of an item left half way. Several processes may write the
same journal (workers of a cluster sharing one output location): SQLite's write-ahead log lets
readers go on while one writes, and a writer waits (``busy_timeout``) for another's short
transaction instead of failing.

Tables:

* ``items``: one row per finished item (key, PACS, level, status, attempts, instances, bytes,
  last error). An item not there (or not ``done``/``expanded``) is retrieved again.
* ``instances``: the instances received for items not finished yet (SOP Instance UID, series,
  study, file, bytes). When an item is done its rows are deleted (``keep_instances=False``, the
  default), so the journal stays the size of the items plus those in flight, not of every
  instance ever retrieved.
* ``children``: the items a query (``find``) item expanded to, so that a rerun does not ask
  the PACS again and resumes them like the others.

Writes are batched: instances are committed every :attr:`Journal.batch` rows, when one arrives
:attr:`Journal.batch_seconds` after the oldest uncommitted one, and when any item ends. An
instance whose file was written just before a kill but not yet committed is fetched again by
the rerun (its file is replaced atomically): never missing, at worst twice.

The calls block (SQLite has no async API, and the library uses no threads); each is one short
transaction on a local file, far below the loop's budget of a few milliseconds in the normal
case. A journal on a network file system may break SQLite's locking: keep it local.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import attrs

from aiodicom.bulk.manifest import ManifestItem

__all__ = ["JOURNAL_NAME", "ChildrenWriter", "Journal", "JournalRecord"]

JOURNAL_NAME = ".aiodicom-bulk.sqlite"
"""The journal's file name in the output directory, by default."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    pacs TEXT NOT NULL,
    level TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    instances INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    updated REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS instances (
    item TEXT NOT NULL,
    sop TEXT NOT NULL,
    series TEXT,
    study TEXT,
    path TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (item, sop)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS children (
    parent TEXT NOT NULL,
    seq INTEGER NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (parent, seq)
) WITHOUT ROWID;
"""


@attrs.frozen
class JournalRecord:
    """A finished item as the journal has it."""

    key: str
    pacs: str
    level: str
    status: str
    attempts: int
    instances: int
    bytes: int
    error: str | None


@attrs.frozen
class DoneInstance:
    sop: str
    series: str | None
    study: str | None
    path: str | None
    bytes: int


_WAL_ATTEMPTS = 5
"""How often an opener tries to switch a new journal to WAL while others do the same."""


class Journal:
    """``with Journal(path) as journal:``, or :meth:`close` it. ``path`` is the SQLite file
    (created with its directory if missing)."""

    def __init__(
        self, path: str | os.PathLike[str], *, keep_instances: bool = False, batch: int = 256,
        batch_seconds: float = 1.0, busy_timeout: float = 60.0,
    ) -> None:
        self.path = Path(path)
        self.keep_instances = keep_instances
        self.batch = batch
        self.batch_seconds = batch_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are begun explicitly, kept short.
        self._db = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        self._use_wal()
        # In WAL mode NORMAL loses at most the last transactions on power loss, never
        # consistency; a rerun then fetches those instances again.
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
        self._pending: list[tuple[str, str, str | None, str | None, str | None, int]] = []
        self._first_pending = 0.0

    def _use_wal(self) -> None:
        # WAL is kept in the file: only its first opener switches, taking an exclusive lock.
        # Processes opening a new journal at the same moment (shares of a bulk run starting
        # together) may all try: SQLite refuses the losers at once rather than have them wait
        # (two connections upgrading their shared locks would deadlock). A loser then waits
        # for the lock the way every other statement here does (busy_timeout), by taking a
        # write lock and giving it back, and asks again: by then the switch is done. Asking
        # again at once was not enough (processes: 12 of 800 openers failed).
        for attempt in range(_WAL_ATTEMPTS):
            (mode,) = self._db.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() == "wal":
                return
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if attempt == _WAL_ATTEMPTS - 1:
                    raise
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("COMMIT")

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    # --- items ---------------------------------------------------------------------------

    def record(self, key: str) -> JournalRecord | None:
        row = self._db.execute(
            "SELECT key, pacs, level, status, attempts, instances, bytes, error FROM items "
            "WHERE key = ?", (key,),
        ).fetchone()
        return JournalRecord(*row) if row is not None else None

    def status(self, key: str) -> str | None:
        row = self._db.execute("SELECT status FROM items WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row is not None else None

    def finish(
        self, item: ManifestItem, status: str, *, attempts: int, instances: int, bytes: int,
        error: str | None = None,
    ) -> None:
        """The item ended (``done``, ``failed``, ``expanded``); its instance rows go unless
        kept. A ``failed`` item keeps them: a later run resumes it."""
        key = item.key
        with self._transaction():
            self._flush_pending()
            # Instances of earlier runs count too: the record says what the item holds.
            previous = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM instances WHERE item = ?", (key,)
            ).fetchone()
            total_instances, total_bytes = (int(previous[0]), int(previous[1])) \
                if previous else (0, 0)
            self._db.execute(
                "INSERT INTO items (key, pacs, level, status, attempts, instances, bytes, "
                "error, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE"
                " SET status = excluded.status, attempts = items.attempts + excluded.attempts,"
                " instances = excluded.instances, bytes = excluded.bytes,"
                " error = excluded.error, updated = excluded.updated",
                (key, item.pacs, item.level.value, status, attempts,
                 max(instances, total_instances), max(bytes, total_bytes), error, time.time()),
            )
            if status == "done" and not self.keep_instances:
                self._db.execute("DELETE FROM instances WHERE item = ?", (key,))

    def records(self) -> Iterator[JournalRecord]:
        """Every finished item (streamed)."""
        cursor = self._db.execute(
            "SELECT key, pacs, level, status, attempts, instances, bytes, error FROM items"
        )
        for row in cursor:
            yield JournalRecord(*row)

    # --- instances -------------------------------------------------------------------------

    def add_instance(
        self, item_key: str, sop: str, *, series: str | None, study: str | None,
        path: str | None, size: int,
    ) -> None:
        """An instance of ``item_key`` is stored (committed with the next batch)."""
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending.append((item_key, sop, series, study, path, size))
        if len(self._pending) >= self.batch or \
                time.monotonic() - self._first_pending >= self.batch_seconds:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            with self._transaction():
                self._flush_pending()

    def _flush_pending(self) -> None:
        pending, self._pending = self._pending, []
        self._db.executemany(
            "INSERT OR REPLACE INTO instances (item, sop, series, study, path, bytes) "
            "VALUES (?, ?, ?, ?, ?, ?)", pending,
        )

    def instances(self, item_key: str) -> list[DoneInstance]:
        """The instances of an unfinished item that earlier attempts or runs stored."""
        self.flush()
        return [
            DoneInstance(*row) for row in self._db.execute(
                "SELECT sop, series, study, path, bytes FROM instances WHERE item = ?",
                (item_key,),
            )
        ]

    # --- expanded queries ---------------------------------------------------------------

    def children_writer(self, parent: ManifestItem) -> ChildrenWriter:
        """Where a query's matches go as they come (see :class:`ChildrenWriter`)."""
        return ChildrenWriter(self, parent)

    def children(self, parent: ManifestItem) -> Iterator[ManifestItem]:
        """The items a query expanded to, streamed in their order."""
        key = parent.key
        seq = 0
        while True:
            # A page at a time: a statement left open for the whole iteration would hold a
            # read transaction, and the write-ahead log could not be checkpointed meanwhile.
            rows = self._db.execute(
                "SELECT seq, item FROM children WHERE parent = ? AND seq >= ? ORDER BY seq "
                "LIMIT 512", (key, seq),
            ).fetchall()
            if not rows:
                return
            for seq, text in rows:  # noqa: B007 - the last seq read starts the next page
                child = ManifestItem.from_mapping(json.loads(text))
                yield attrs.evolve(child, parent=key)
            seq += 1

    # --- life ------------------------------------------------------------------------------

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class ChildrenWriter:
    """The items a query expands to, written in batches as the C-FIND answers; the query is
    marked ``expanded`` by :meth:`finish` only, so that a run killed half way through the
    C-FIND expands it again (its partial children are replaced then)."""

    def __init__(self, journal: Journal, parent: ManifestItem) -> None:
        self._journal = journal
        self._parent = parent
        self._seq = 0
        with journal._transaction():
            journal._db.execute("DELETE FROM children WHERE parent = ?", (parent.key,))

    def add(self, children: Iterable[ManifestItem]) -> None:
        key = self._parent.key
        rows = []
        for child in children:
            rows.append((key, self._seq, json.dumps(child.to_json())))
            self._seq += 1
        if rows:
            with self._journal._transaction():
                self._journal._db.executemany(
                    "INSERT OR REPLACE INTO children (parent, seq, item) VALUES (?, ?, ?)", rows
                )

    def finish(self) -> int:
        """Mark the query expanded; returns the number of its children."""
        parent = self._parent
        with self._journal._transaction():
            self._journal._db.execute(
                "INSERT INTO items (key, pacs, level, status, instances, updated) VALUES "
                "(?, ?, ?, 'expanded', ?, ?) ON CONFLICT (key) DO UPDATE SET status = "
                "'expanded', instances = excluded.instances, updated = excluded.updated",
                (parent.key, parent.pacs, parent.level.value, self._seq, time.time()),
            )
        return self._seq


class _Transaction:
    """BEGIN IMMEDIATE (take the write lock at once, waiting for another process's short
    transaction) ... COMMIT, or ROLLBACK on error."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
