"""Connections to one SQLite cache file: one per thread, re-opened after a fork, and the one write
transaction every write goes through.

Separate from ``sqlite.py`` (``SQLiteStore``, the statements of the ``Store`` protocol) because this
is the part that decides how the file is shared, and it is the same for every statement:

- one connection per thread, since a ``sqlite3.Connection`` must not be used by two threads at
  once, opened again in a forked child, which must not touch its parent's;
- WAL, so readers never block the writer, and ``synchronous=NORMAL``, applied here only;
- every write through ``transaction()``: ``BEGIN IMMEDIATE`` takes the write lock up front (a
  deferred transaction that upgrades later can fail at once with "database is locked" instead of
  waiting), commit on success, rollback on any exception, and a bounded wait on a locked
  database that ends in ``LockTimeoutError``;
- a new file created readable by its owner only: it holds prompts and answers.

``":memory:"`` opens a named shared-cache memory database, so every thread's connection sees the
same data; ``SQLiteStore`` keeps its first connection open so the database lives as long as it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

from semcache.errors import LockTimeoutError, StoreError
from semcache.storage.location import sqlite_target


class SQLiteConnections:
    """This process's connections to one SQLite database, and its write transaction."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float) -> None:
        self.busy_timeout = busy_timeout
        target = sqlite_target(path)  # a URL of another engine is an error, never a file name
        if target == ":memory:":
            self.target = f"file:semcache-{uuid.uuid4().hex}?mode=memory&cache=shared"
            self._uri = True
            self.path: Path | None = None
        else:
            self.path = Path(target)
            self.target = str(self.path)
            self._uri = False
            _create_private(self.path)
        self._local = threading.local()
        self._closed = False
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again in a forked child)."""
        if self._closed:
            raise StoreError("the cache is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            try:
                conn = sqlite3.connect(
                    self.target,
                    uri=self._uri,
                    timeout=self.busy_timeout,
                    isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open {self.target}: {exc}") from exc
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE``, commit on success, rollback on any error."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise LockTimeoutError(
                    f"{self.target} stayed locked for more than {self.busy_timeout:g} s"
                ) from exc
            raise StoreError(f"cannot write to {self.target}: {exc}") from exc
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection opened here, in any thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._all_lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()


def _create_private(path: Path) -> None:
    """Create the cache file readable by its owner only: it holds prompts and answers."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
