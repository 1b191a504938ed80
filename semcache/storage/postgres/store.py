"""The PostgreSQL store (``PostgresStore``): the ``Store`` protocol on a database a fleet shares.

PostgreSQL is the system of record for every node: entries with their embeddings, settings,
thresholds, feedback, vetoes, the audit log, shadow checks and counters. Each node keeps FAISS
replicas of the scopes it searches, caught up from the change feed (``feed.py``), and re-checks
every candidate against the database (row alive, not expired, same scope, similarity recomputed
from the stored vector), so replica lag can cost a hit but never serve a wrong answer.

``PostgresStore`` is a facade: it picks the connection or transaction of each call and runs
statements kept in the modules beside it (``entries.py``, ``books.py``, ``settings.py``,
``migrations.py``, ``feed.py``, ``snapshots.py``, ``rows.py``). Writes of entries notify the other
nodes at commit (``listen.py``), so that a replica reads the feed only when its scope changed.
Every statement is parameterized; the only SQL assembled from text is fixed column lists and lock
keys. Connections, time budgets and outages are ``connect.py``'s; errors leave as ``StoreError``
or ``StoreUnavailableError`` without the password.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from semcache.errors import UsageError
from semcache.storage.base import Changes, NewEntry, Search, Sink, SnapshotHead
from semcache.storage.postgres import books, feed, listen, migrations, rows, snapshots, vectors
from semcache.storage.postgres import entries as entry_sql
from semcache.storage.postgres import settings as settings_sql
from semcache.storage.postgres.connect import Connections
from semcache.storage.postgres.qmark import QmarkConnection
from semcache.types import Label, StoredEntry, ThresholdChange

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool


class PostgresStore:
    """One cache in a PostgreSQL database (the tables of the URL's current schema)."""

    path = None  # no file: replicas come from the database (entries, or a prebuilt snapshot)
    dialect: Literal["postgresql"] = "postgresql"

    def __init__(
        self,
        dsn: str | ConnectionPool[Any],
        *,
        busy_timeout: float = 5.0,
        create: bool = True,
        search: Search = "local",
    ) -> None:
        """Open the cache in the URL's schema, or in the schema a ``psycopg_pool.ConnectionPool``'s
        connections use (borrowed for each call, never closed here: ``pool.py``). ``create=False``
        (maintenance: the command line) refuses a schema holding no semcache cache instead of
        creating one there. ``search="pgvector"``: semantic lookups search in the database
        (``vectors.py``); the server must have pgvector (the extension is created when missing
        and the role may). It takes a URL, not a pool: its search setting (``hnsw.ef_search``)
        is set for the cache's own sessions, and a pool's sessions are the owner's."""
        if search != "local" and not isinstance(dsn, str):
            raise UsageError(
                f"search={search!r} takes a postgresql:// URL, not a pool: pass the pool's conninfo"
            )
        self.busy_timeout = busy_timeout
        self.search: Search = search
        self.pgvector: vectors.InDatabase | None = None  # with search="pgvector"
        extra = f"-c hnsw.ef_search={vectors.EF_SEARCH}" if search == "pgvector" else ""
        self._db = Connections(dsn, statement_timeout=busy_timeout, settings=extra)
        self.location = self._db.location  # the URL with its password replaced by ***
        try:
            with self._db.reading() as conn:
                if not create:
                    migrations.require(conn, self.location)
                if search == "pgvector":  # before any table is made: refused without pgvector
                    self.pgvector = vectors.InDatabase(conn)
                migrations.migrate(conn)
                schema = conn.execute("SELECT md5(current_schema())").fetchone()[0]
        except BaseException:
            self._db.close()
            raise
        self._listener = listen.Listener(
            self._db.dedicated, listen.channel_for(str(schema)), self._db.clean, self.location
        )

    def __repr__(self) -> str:
        pool = self._db.pool
        return f"PostgresStore({self.location!r}{'' if pool is None else f', pool={pool.name!r}'})"

    @property
    def listener(self) -> listen.Listener:
        """This cache's change listener (``listen.py``): whether it listens, on which session."""
        return self._listener

    def close(self) -> None:
        self._listener.close()
        self._db.close()

    def outages(self) -> int:
        return self._db.outages

    def timeouts(self) -> int:
        """Statements this process gave up on after ``busy_timeout`` seconds."""
        return self._db.timeouts

    # -- settings ---------------------------------------------------------------------------

    def settings(self) -> dict[str, str]:
        with self._db.reading() as conn:
            return settings_sql.read(conn)

    def check_settings(self, expected: Mapping[str, str]) -> None:
        """Record ``expected`` on first use; refuse a database created with other settings (the
        settings recorded stay, committed, when they are refused)."""
        with self._db.transaction() as conn:
            stored = settings_sql.record(conn, expected)
        settings_sql.compare(stored, expected)

    # -- entries ----------------------------------------------------------------------------

    def get_exact(self, exact_key: str, now: float) -> StoredEntry | None:
        with self._db.reading() as conn:
            return entry_sql.get_exact(conn, exact_key, now)

    def get_many(self, ids: list[int], now: float) -> dict[int, StoredEntry]:
        """The live entries among ``ids`` with their vectors; expired and deleted ones are absent."""
        if not ids:
            return {}
        with self._db.reading() as conn:
            return entry_sql.get_many(conn, ids, now)

    def candidates(
        self, ids: list[int], now: float, dimension: int
    ) -> tuple[dict[int, StoredEntry], dict[int, np.ndarray]]:
        """One statement instead of ``get_many`` then ``wrong_queries``: a round trip less on
        every semantic lookup."""
        if not ids:
            return {}, {}
        with self._db.reading() as conn:
            return entry_sql.candidates(conn, ids, now, dimension)

    def vectors_since(
        self, scope: str, after_id: int, dimension: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The scope's embedded entries with id > ``after_id`` (a full reload when 0). For tools:
        replicas catch up with ``changes``, since ids do not commit in order here."""
        loaded = self.changes(scope, 0, dimension)
        keep = loaded.ids > after_id
        return loaded.ids[keep], loaded.vectors[keep]

    def changes(self, scope: str, cursor: int, dimension: int) -> Changes:
        with self._db.reading() as conn:
            return feed.changes(conn, scope, cursor, dimension)

    def change_token(self, scope: str) -> listen.Token | None:
        """Changes when ``scope`` may have changed (a notification, a reconnect, or
        ``listen.POLL_EVERY`` seconds); None while notifications are not being received."""
        return self._listener.token(scope)

    def put(self, entry: NewEntry) -> tuple[int, int | None]:
        return self.put_many([entry])[0]

    def put_many(self, entries: Sequence[NewEntry]) -> list[tuple[int, int | None]]:
        """Insert entries in order in one transaction, each replacing any entry with its exact
        key (the replacement gets a new id); returns ``(new id, replaced id or None)`` each."""
        now = time.time()
        with self._db.transaction() as conn:
            written = [entry_sql.insert(conn, entry, now) for entry in entries]
            payloads = self._listener.announce(conn, (entry.scope for entry in entries))
        self._listener.touch(payloads)
        return written

    def delete(self, entry_id: int) -> None:
        with self._db.transaction() as conn:
            payloads = self._listener.announce(conn, entry_sql.delete(conn, entry_id))
        self._listener.touch(payloads)

    def evict_expired(self, now: float) -> list[tuple[int, str]]:
        """Delete expired entries (their removal reaches every replica through the feed), and
        prune feed rows older than ``feed.RETENTION``."""
        with self._db.transaction() as conn:
            gone = entry_sql.delete_expired(conn, now)
            payloads = self._listener.announce(conn, (scope for _, scope in gone))
        self._listener.touch(payloads)
        with self._db.reading() as conn:
            feed.prune(conn, now - feed.RETENTION)
        return gone

    def prune_feed(self, older_than: float) -> int:
        """Drop feed rows written before ``older_than``; replicas behind them reload."""
        with self._db.reading() as conn:
            return feed.prune(conn, older_than)

    def evict_lru(self, max_entries: int) -> list[tuple[int, str]]:
        """Delete the least recently used entries beyond ``max_entries``; returns ``(id, scope)``
        (nodes evicting at once remove the excess once, not once each)."""
        with self._db.transaction() as conn:
            gone = entry_sql.delete_lru(conn, max_entries)
            payloads = self._listener.announce(conn, (scope for _, scope in gone))
        self._listener.touch(payloads)
        return gone

    def count(self) -> int:
        """Entries in the database (kept by the feed trigger: no table scan)."""
        with self._db.reading() as conn:
            return entry_sql.count(conn)

    def nearest(
        self, scope: str, vector: np.ndarray, k: int, now: float
    ) -> list[tuple[int, float]]:
        """The ``k`` live entries of ``scope`` nearest to ``vector``, searched by pgvector
        (``search="pgvector"``); the first call adds the search column when it is missing."""
        if self.pgvector is None:
            raise UsageError("this cache searches locally: open it with search='pgvector'")
        with self._db.reading() as conn:
            return self.pgvector.nearest(conn, scope, vector, k, now)

    # -- prebuilt indexes (``snapshots.py``) ------------------------------------------------

    def snapshot_head(self, scope: str) -> SnapshotHead | None:
        with self._db.reading() as conn:
            return snapshots.head(conn, scope)

    def publish_snapshot(
        self,
        scope: str,
        source: Path,
        meta: Mapping[str, Any],
        tombstones: Sequence[int],
        *,
        replacing: str = "",
    ) -> bool:
        with self._db.reading() as conn:
            return snapshots.publish(conn, scope, source, meta, tombstones, replacing=replacing)

    def download_snapshot(self, scope: str, target: Sink) -> SnapshotHead | None:
        with self._db.reading() as conn:
            return snapshots.download(conn, scope, target)

    def drop_snapshot(self, scope: str) -> None:
        with self._db.reading() as conn:
            snapshots.drop(conn, scope)

    # -- whole tables, for moving a cache between engines (``rows.py``) ---------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[rows.Snapshot]:
        """Read whole tables (entries, settings, thresholds) from one consistent snapshot."""
        with self._db.guard(), self._db.borrow() as conn, rows.read(conn) as snap:
            yield snap

    def add_rows(
        self,
        entries: Iterable[Mapping[str, Any]],
        thresholds: Iterable[Sequence[Any]] = (),
        instructor: Iterable[Sequence[Any]] = (),
    ) -> tuple[dict[int, int], int, int]:
        """Insert another cache's entries (new ids; held exact keys skipped), the thresholds not
        set here and the instructor ``cache=`` rows whose key is not held here, in one
        transaction. Returns (source id -> new id, thresholds added, instructor rows added)."""
        with self._db.transaction() as conn:
            added = (
                rows.add_entries(conn, entries),
                rows.add_thresholds(conn, thresholds),
                rows.add_instructor_rows(conn, instructor),
            )
            payloads = self._listener.announce(conn, [listen.ANY_SCOPE] if added[0] else [])
        self._listener.touch(payloads)
        return added

    # -- maintenance SQL (``semcache.storage.base.Rows``): ``?`` placeholders, both engines ----

    @contextlib.contextmanager
    def reading(self) -> Iterator[QmarkConnection]:
        """This thread's connection for maintenance reads (each statement commits)."""
        with self._db.reading() as conn:
            yield QmarkConnection(conn)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[QmarkConnection]:
        """One maintenance write transaction: commit on success, rollback on any error."""
        with self._db.transaction() as conn:
            yield QmarkConnection(conn)

    def columns(self, table: str) -> list[str]:
        with self._db.reading() as conn:
            return migrations.columns(conn, table)

    def table_bytes(self) -> int:
        """The on-disk size of the cache's tables, their indexes and TOAST data."""
        with self._db.reading() as conn:
            return migrations.table_bytes(conn)

    # -- bookkeeping (``books.py``) -----------------------------------------------------------

    def record(
        self,
        hits: Mapping[int, tuple[int, float]],
        counters: Mapping[str, int],
        rows: Mapping[str, Sequence[tuple[Any, ...]]] | None = None,
    ) -> None:
        if not hits and not any(counters.values()) and not any((rows or {}).values()):
            return
        with self._db.transaction() as conn:
            books.record(conn, hits, counters, rows or {})

    def trim_audit(self, *, older_than: float | None, max_rows: int | None) -> int:
        return self.trim_log("audit", older_than=older_than, max_rows=max_rows)

    def trim_log(self, table: str, *, older_than: float | None, max_rows: int | None) -> int:
        with self._db.transaction() as conn:
            return books.trim_log(conn, table, older_than, max_rows)

    def counters(self) -> dict[str, int]:
        with self._db.reading() as conn:
            return books.counters(conn)

    def thresholds(self) -> dict[str, float]:
        with self._db.reading() as conn:
            return books.thresholds(conn)

    def set_threshold(
        self,
        target: str,
        threshold: float | None,
        source: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        with self._db.transaction() as conn:
            books.set_threshold(conn, target, threshold, source, evidence)

    def threshold_changes(self, limit: int | None = 20) -> list[ThresholdChange]:
        with self._db.reading() as conn:
            return books.threshold_changes(conn, limit)

    def labels(self, scope: str | None = None) -> list[Label]:
        with self._db.reading() as conn:
            return books.labels(conn, scope)

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
        with self._db.transaction() as conn:
            books.add_feedback(conn, entry_id, scope, query, candidate, similarity, embedding, note)

    def wrong_queries(self, entry_ids: list[int], dimension: int) -> dict[int, np.ndarray]:
        if not entry_ids:
            return {}
        with self._db.reading() as conn:
            return books.wrong_queries(conn, entry_ids, dimension)

    def add_shadow(
        self, scope: str, entry_id: int, similarity: float, agree: bool, fields: list[str]
    ) -> None:
        with self._db.transaction() as conn:
            books.add_shadow(conn, scope, entry_id, similarity, agree, fields)

    def shadow_counts(self) -> dict[str, tuple[int, int, float | None]]:
        with self._db.reading() as conn:
            return books.shadow_counts(conn)
