"""The SQLite store (``SQLiteStore``, the ``Store`` protocol on one file): the source of truth for
entries, their embeddings, settings and counters.

Plain tables with JSON in text columns, so ``sqlite3`` and Datasette users can read a cache file.
The FAISS index is derived from the ``embedding`` column and can always be rebuilt from it.

Concurrency model (``sqlite_connect.py``): one connection per thread (re-opened after a fork), WAL
so readers never block the writer, and every write through ``transaction()`` (``BEGIN IMMEDIATE``;
a bounded wait on a locked database that ends in ``LockTimeoutError``). Entry ids come from
AUTOINCREMENT: never reused, and, since writers are serialized, committed in increasing order,
which is what lets the index catch up with ``WHERE id > watermark``. The tables beside
``entries`` are ``bookkeeping.py``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import sqlite_utils

from semcache.errors import ConfigMismatchError, StoreError
from semcache.storage.base import Changes, NewEntry
from semcache.storage.bookkeeping import Bookkeeping
from semcache.storage.schema import ADDED_COLUMNS, ADDED_INDEXES, FORMAT_VERSION, SCHEMA, VIEWS
from semcache.storage.sqlite_connect import SQLiteConnections
from semcache.types import Label, StoredEntry, ThresholdChange

_ENTRY_COLUMNS = "id, exact_key, scope, prompt, response_json, raw_json, total_tokens"
_CANDIDATE_COLUMNS = _ENTRY_COLUMNS + ", embedding"
# The expiry sweep's condition and the size bound's order; each has its index (schema.py).
EXPIRED = "expires_at IS NOT NULL AND expires_at <= ?"
RECENCY = "coalesce(last_hit_at, created_at), id"


class SQLiteStore:
    """SQLite access for one cache file (or a private in-memory database for ``":memory:"``)."""

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.busy_timeout = busy_timeout
        self._db = SQLiteConnections(path, busy_timeout=busy_timeout)
        self.path: Path | None = self._db.path
        self._books = Bookkeeping(self._db)
        # The first connection of a memory database keeps it alive for the cache's lifetime.
        self._keepalive = self.connection()
        try:
            with self.transaction() as conn:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)  # idempotent DDL
                self._migrate(conn)
            self._ensure_views()
        except (sqlite3.DatabaseError, StoreError) as exc:
            self.close()
            raise StoreError(f"{self._db.target} is not a usable semcache database: {exc}") from exc

    # -- connections and transactions (``sqlite_connect.py``) -------------------------------

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again in a forked child)."""
        return self._db.connection()

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction: ``BEGIN IMMEDIATE``, commit on success, rollback on any error."""
        return self._db.transaction()

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, for reads (``Rows``: the same call on both engines)."""
        yield self.connection()

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else ":memory:"

    def close(self) -> None:
        """Close every connection this store opened; idempotent."""
        self._db.close()

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        """Add columns that files written by earlier versions lack (all nullable), so an old file
        keeps working instead of failing every query."""
        for table, column, kind in ADDED_COLUMNS:  # constants of schema.py, never user input
            have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        # Created here, after the columns they cover exist (a file from an earlier version).
        for statement in ADDED_INDEXES:
            conn.execute(statement)

    def _ensure_views(self) -> None:
        """Read-only views for ``sqlite3`` and Datasette users (times as UTC datetimes)."""
        db = sqlite_utils.Database(self.connection())
        existing = set(db.view_names())
        for name, select in VIEWS.items():
            if name not in existing:
                db.create_view(name, select, ignore=True)

    # -- settings ---------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        rows = self.connection().execute("SELECT key, value FROM settings").fetchall()
        return {str(k): str(v) for k, v in rows}

    def check_settings(self, expected: Mapping[str, str]) -> None:
        """Record ``expected`` on first use; refuse to open a file created with other settings."""
        with self.transaction() as conn:
            stored = dict(conn.execute("SELECT key, value FROM settings").fetchall())
            version = stored.get("format_version")
            if version is not None and version != str(FORMAT_VERSION):
                raise ConfigMismatchError(
                    f"cache file has format version {version}; this semcache reads {FORMAT_VERSION}"
                )
            for key, value in expected.items():
                if key in stored and stored[key] != value:
                    raise ConfigMismatchError(
                        f"cache file was created with {key}={stored[key]!r}, "
                        f"not {value!r}: open it with the same embedder, or use another file"
                    )
            missing = {
                "format_version": str(FORMAT_VERSION),
                "created_at": str(time.time()),
                "database_id": uuid.uuid4().hex,  # binds derived index files to this database
            }
            missing.update(expected)
            conn.executemany(
                "INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)", missing.items()
            )

    # -- entries ----------------------------------------------------------------------------

    def get_exact(self, exact_key: str, now: float) -> StoredEntry | None:
        """The live (unexpired) entry stored under ``exact_key``."""
        row = (
            self.connection()
            .execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE exact_key = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (exact_key, now),
            )
            .fetchone()
        )
        return StoredEntry(*row) if row else None

    def get_many(self, ids: list[int], now: float) -> dict[int, StoredEntry]:
        """The live entries among ``ids``; expired and deleted ones are simply absent."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = (
            self.connection()
            .execute(
                f"SELECT {_CANDIDATE_COLUMNS} FROM entries WHERE id IN ({marks}) "
                "AND (expires_at IS NULL OR expires_at > ?)",
                [*ids, now],
            )
            .fetchall()
        )
        return {int(row[0]): StoredEntry(*row) for row in rows}

    def vectors_since(
        self, scope: str, after_id: int, dimension: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and vectors of ``scope``'s embedded entries with id > ``after_id``, in id order.

        Rows whose blob has the wrong size (a damaged or foreign row) are skipped, never indexed.
        """
        rows = (
            self.connection()
            .execute(
                "SELECT id, embedding FROM entries WHERE scope = ? AND id > ? "
                "AND embedding IS NOT NULL ORDER BY id",
                (scope, after_id),
            )
            .fetchall()
        )
        width = dimension * 4
        good = [(i, b) for i, b in rows if isinstance(b, bytes) and len(b) == width]
        ids = np.fromiter((i for i, _ in good), dtype=np.int64, count=len(good))
        if not good:
            return ids, np.zeros((0, dimension), dtype=np.float32)
        vectors = np.frombuffer(b"".join(b for _, b in good), dtype="<f4").reshape(-1, dimension)
        return ids, vectors.astype(np.float32, copy=False)

    def changes(self, scope: str, cursor: int, dimension: int) -> Changes:
        """Entries of ``scope`` added after id ``cursor``; removals are found when a hit is
        re-checked, so none are listed."""
        ids, vectors = self.vectors_since(scope, cursor, dimension)
        return Changes(ids, vectors)

    def change_token(self, scope: str) -> None:
        """No hint: asking ``changes`` is one indexed read of the local file."""
        return None

    def outages(self) -> int:
        return 0  # a file has no server to lose

    def put(self, entry: NewEntry) -> tuple[int, int | None]:
        """Insert an entry, replacing any entry with the same exact key, in one transaction.

        Returns ``(new id, replaced id or None)``. The replacement gets a new id so that an index in
        another process that still holds the old id can never reach the new answer through it.
        """
        return self.put_many([entry])[0]

    def put_many(self, entries: Sequence[NewEntry]) -> list[tuple[int, int | None]]:
        """``put`` for many entries in one transaction: all of them are written, or none.

        Entries are written in order, so of two with the same exact key the later one stays (the
        earlier one is reported as replaced). One commit per batch is what makes bulk loading
        fast: a commit costs about as much as writing a hundred rows.
        """
        now = time.time()
        written: list[tuple[int, int | None]] = []
        with self.transaction() as conn:
            for entry in entries:
                written.append(_insert(conn, entry, now))
        return written

    def delete(self, entry_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM entries WHERE id = ?", (entry_id,))

    def evict_expired(self, now: float) -> list[tuple[int, str]]:
        """Delete expired entries; returns their ``(id, scope)``."""
        with self.transaction() as conn:
            gone = conn.execute(f"SELECT id, scope FROM entries WHERE {EXPIRED}", (now,)).fetchall()
            conn.execute(f"DELETE FROM entries WHERE {EXPIRED}", (now,))
        return [(int(i), str(s)) for i, s in gone]

    def evict_lru(self, max_entries: int) -> list[tuple[int, str]]:
        """Delete the least recently used entries beyond ``max_entries``; returns ``(id, scope)``.

        Recency is the last hit, or the creation time of an entry never hit.
        """
        with self.transaction() as conn:
            excess = int(conn.execute("SELECT count(*) FROM entries").fetchone()[0]) - max_entries
            if excess <= 0:
                return []
            gone = conn.execute(
                f"SELECT id, scope FROM entries ORDER BY {RECENCY} LIMIT ?",
                (excess,),
            ).fetchall()
            conn.executemany("DELETE FROM entries WHERE id = ?", [(i,) for i, _ in gone])
        return [(int(i), str(s)) for i, s in gone]

    def count(self) -> int:
        return int(self.connection().execute("SELECT count(*) FROM entries").fetchone()[0])

    # -- bookkeeping (``semcache.storage.bookkeeping``), through this store's transactions ----

    def record(
        self,
        hits: Mapping[int, tuple[int, float]],
        counters: Mapping[str, int],
        rows: Mapping[str, Sequence[tuple[Any, ...]]] | None = None,
    ) -> None:
        self._books.record(hits, counters, rows)

    def trim_audit(self, *, older_than: float | None, max_rows: int | None) -> int:
        return self._books.trim_log("audit", older_than=older_than, max_rows=max_rows)

    def trim_log(self, table: str, *, older_than: float | None, max_rows: int | None) -> int:
        return self._books.trim_log(table, older_than=older_than, max_rows=max_rows)

    def counters(self) -> dict[str, int]:
        return self._books.counters()

    def thresholds(self) -> dict[str, float]:
        return self._books.thresholds()

    def set_threshold(
        self,
        target: str,
        threshold: float | None,
        source: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        self._books.set_threshold(target, threshold, source, evidence)

    def threshold_changes(self, limit: int | None = 20) -> list[ThresholdChange]:
        return self._books.threshold_changes(limit)

    def labels(self, scope: str | None = None) -> list[Label]:
        return self._books.labels(scope)

    def add_feedback(
        self,
        entry_id: int,
        scope: str,
        query: str | None,
        candidate: str | None,
        similarity: float | None,
        embedding: np.ndarray | None,
        note: str,
    ) -> None:
        self._books.add_feedback(entry_id, scope, query, candidate, similarity, embedding, note)

    def wrong_queries(self, entry_ids: list[int], dimension: int) -> dict[int, np.ndarray]:
        return self._books.wrong_queries(entry_ids, dimension)

    def candidates(
        self, ids: list[int], now: float, dimension: int
    ) -> tuple[dict[int, StoredEntry], dict[int, np.ndarray]]:
        rows = self.get_many(ids, now)  # two local reads: no round trip to save here
        return rows, self.wrong_queries(list(rows), dimension)

    def add_shadow(
        self, scope: str, entry_id: int, similarity: float, agree: bool, fields: list[str]
    ) -> None:
        self._books.add_shadow(scope, entry_id, similarity, agree, fields)

    def shadow_counts(self) -> dict[str, tuple[int, int, float | None]]:
        return self._books.shadow_counts()

    # -- introspection (sqlite-utils): for check, ls and export, never on the hot path -------

    def columns(self, table: str) -> list[str]:
        """The columns of ``table`` in this file, in table order (other versions add columns);
        empty when the file has no such table."""
        return list(sqlite_utils.Database(self.connection())[table].columns_dict)

    def table_bytes(self) -> int:
        """Size of the database and its WAL on disk (pages in use for a memory database)."""
        if self.path is None:
            row = self.connection().execute(
                "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size"
            )
            return int(row.fetchone()[0])
        paths = (self.path, self.path.with_name(self.path.name + "-wal"))
        return sum(p.stat().st_size for p in paths if p.exists())


def _insert(conn: sqlite3.Connection, entry: NewEntry, now: float) -> tuple[int, int | None]:
    blob = (
        None
        if entry.embedding is None
        else np.ascontiguousarray(entry.embedding, dtype="<f4").tobytes()
    )
    old = conn.execute("SELECT id FROM entries WHERE exact_key = ?", (entry.exact_key,)).fetchone()
    if old:
        conn.execute("DELETE FROM entries WHERE id = ?", (old[0],))
    cursor = conn.execute(
        """INSERT INTO entries (exact_key, scope, namespace, model, schema_name, prompt,
               request_json, response_json, raw_json, usage_json, total_tokens, embedding,
               created_at, expires_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            entry.exact_key, entry.scope, entry.namespace, entry.model, entry.schema_name,
            entry.prompt, entry.request_json, entry.response_json, entry.raw_json,
            entry.usage_json, entry.total_tokens, blob, now, entry.expires_at,
        ),
    )  # fmt: skip
    new_id = cursor.lastrowid
    assert new_id is not None
    return int(new_id), (int(old[0]) if old else None)


def dumps(value: Any) -> str:
    """JSON for text columns: compact, keeps non-ASCII readable."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
