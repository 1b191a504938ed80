"""The storage seam: what the cache needs from the place its entries live.

``Store`` is the protocol the pipeline, the ledger and shadow checks are written against. Two
engines implement it: a SQLite file (``semcache.storage.sqlite``) and a PostgreSQL database shared by
a fleet of processes (``semcache.storage.postgres``). Storage is the source of truth: it holds every
entry *with its embedding*, so every FAISS index is derived and can be rebuilt from it at any time.

An index catches up with its store through ``changes``: the ids and vectors added to a scope since a
cursor, the ids removed, and the new cursor. On SQLite the cursor is the highest entry id read
(writers are serialized, so ids commit in increasing order) and removals are found when a hit is
re-checked; on PostgreSQL ids do not commit in order, and the cursor is a position in a change feed
that also carries removals (``semcache.storage.postgres.feed``), and ``change_token`` lets an index
skip asking when no notification says its scope changed (``semcache.storage.postgres.listen``).

Maintenance (``semcache.ops``, the command line) works on rows beyond this protocol: a store that
also has ``Rows``'s methods (both engines do) runs the same SQL on either engine, written once with
``?`` placeholders in the SQL both engines accept; ``dialect`` says which engine it is where the two
must differ (integrity checks, reclaiming space, catalog queries).

A store shared by a fleet may also keep prebuilt indexes (``SnapshotStore``): a node that built a
large scope's index publishes it with the feed position it covers, and a new node downloads it
and applies the feed from there instead of building (``semcache.scopes``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np

from semcache.types import Label, StoredEntry, ThresholdChange

# Where a semantic lookup searches: a FAISS index in this process, derived from the store
# ("local", the default), or the database itself ("pgvector": a ``VectorSearch`` store).
Search = Literal["local", "pgvector"]
SEARCHES: tuple[Search, ...] = get_args(Search)


@dataclass(frozen=True)
class NewEntry:
    """What the cache writes for one answered request."""

    exact_key: str
    scope: str
    namespace: str
    model: str | None
    schema_name: str
    prompt: str | None
    request_json: str
    response_json: str
    raw_json: str | None
    usage_json: str | None
    total_tokens: int
    embedding: np.ndarray | None
    expires_at: float | None = None


@dataclass(frozen=True)
class Changes:
    """What an index of one scope applies to reach the store's state as of ``cursor``.

    ``ids``/``vectors`` are entries to add, ``removed`` entries to drop. ``cursor`` is None when the
    cursor is the highest id added (SQLite); otherwise the index keeps it and passes it back.
    ``reload``: the cursor is too old for the store to say what changed since; the index drops
    the scope and asks again from cursor 0 (a full load).
    """

    ids: np.ndarray
    vectors: np.ndarray
    removed: list[int] = field(default_factory=list)
    cursor: int | None = None
    reload: bool = False


class Store(Protocol):
    """Entries, settings and bookkeeping of one cache. Every write is one transaction."""

    @property
    def path(self) -> Path | None:
        """The database file, beside which derived index files are saved (None: nowhere)."""
        ...

    def close(self) -> None: ...

    def outages(self) -> int:
        """How many times this process lost the database server (0 for a file)."""
        ...

    # -- settings: what the cache was created with; a mismatch raises ConfigMismatchError
    def settings(self) -> dict[str, str]: ...

    def check_settings(self, expected: Mapping[str, str]) -> None: ...

    # -- entries
    def get_exact(self, exact_key: str, now: float) -> StoredEntry | None: ...

    def get_many(self, ids: list[int], now: float) -> dict[int, StoredEntry]: ...

    def candidates(
        self, ids: list[int], now: float, dimension: int
    ) -> tuple[dict[int, StoredEntry], dict[int, np.ndarray]]:
        """``get_many(ids, now)`` and the ``wrong_queries`` of the rows found, read together:
        what a semantic lookup needs, in one round trip on a server."""
        ...

    def vectors_since(
        self, scope: str, after_id: int, dimension: int
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def changes(self, scope: str, cursor: int, dimension: int) -> Changes: ...

    def change_token(self, scope: str) -> Hashable | None:
        """A value that changes whenever ``scope`` may have changed since it was taken: an index
        that caught up after taking it may skip ``changes`` while it is the same. None: no such
        hint, ask ``changes`` every time (SQLite, where that is one local read)."""
        ...

    def put(self, entry: NewEntry) -> tuple[int, int | None]: ...

    def put_many(self, entries: Sequence[NewEntry]) -> list[tuple[int, int | None]]: ...

    def delete(self, entry_id: int) -> None: ...

    def evict_expired(self, now: float) -> list[tuple[int, str]]: ...

    def evict_lru(self, max_entries: int) -> list[tuple[int, str]]: ...

    def count(self) -> int: ...

    # -- bookkeeping: counters, hit counts, vetoes, audit, thresholds, feedback, shadow, labels
    def record(
        self,
        hits: Mapping[int, tuple[int, float]],
        counters: Mapping[str, int],
        rows: Mapping[str, Sequence[tuple[Any, ...]]] | None = None,
    ) -> None: ...

    def trim_audit(self, *, older_than: float | None, max_rows: int | None) -> int: ...

    def trim_log(self, table: str, *, older_than: float | None, max_rows: int | None) -> int:
        """Retention of a log table: ``audit`` or ``near_misses``."""
        ...

    def counters(self) -> dict[str, int]: ...

    def thresholds(self) -> dict[str, float]: ...

    def set_threshold(
        self,
        target: str,
        threshold: float | None,
        source: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist a threshold and log the change (old, new, source, evidence) with it."""
        ...

    def threshold_changes(self, limit: int | None = 20) -> list[ThresholdChange]: ...

    def labels(self, scope: str | None = None) -> list[Label]:
        """Near-miss, shadow and feedback labels (``semcache.types.Label``)."""
        ...

    def add_feedback(
        self,
        entry_id: int,
        scope: str,
        query: str | None,
        candidate: str | None,
        similarity: float | None,
        embedding: np.ndarray | None,
        note: str,
    ) -> None: ...

    def wrong_queries(self, entry_ids: list[int], dimension: int) -> dict[int, np.ndarray]: ...

    def add_shadow(
        self, scope: str, entry_id: int, similarity: float, agree: bool, fields: list[str]
    ) -> None: ...

    def shadow_counts(self) -> dict[str, tuple[int, int, float | None]]: ...


class Connection(Protocol):
    """What maintenance SQL runs on: ``execute(sql, params)`` returning a DB-API cursor
    (``fetchone``, ``fetchall``, iteration, ``description``, ``rowcount``)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Any: ...


class Rows(Store, Protocol):
    """A store maintenance can run SQL on: ``semcache.ops`` and the command line take one.

    SQL is written with ``?`` placeholders (the PostgreSQL store translates them) in the syntax
    both engines accept (``ON CONFLICT ... DO NOTHING``, ``CASE``, ``substr``, ``true``).
    """

    @property
    def dialect(self) -> Literal["sqlite", "postgresql"]: ...

    @property
    def location(self) -> str:
        """The file or the database URL (its password replaced by ``***``), for messages."""
        ...

    def reading(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection for reads (each statement sees the latest commits)."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """One write transaction: commit on success, rollback on any error."""
        ...

    def columns(self, table: str) -> list[str]:
        """The columns of ``table`` in table order; empty when there is no such table."""
        ...

    def table_bytes(self) -> int:
        """The space the cache takes: a file and its WAL, or the database's tables."""
        ...


@runtime_checkable
class VectorSearch(Protocol):
    """A store that finds a scope's nearest entries itself (PostgreSQL with pgvector, opened
    with ``search="pgvector"``) instead of a local index proposing them. Its candidates are
    re-checked like the local index's: they are only proposals."""

    def nearest(
        self, scope: str, vector: np.ndarray, k: int, now: float
    ) -> list[tuple[int, float]]:
        """The ``k`` live entries of ``scope`` nearest to ``vector`` as ``(entry id, cosine
        similarity)``, best first."""
        ...


@dataclass(frozen=True)
class SnapshotHead:
    """What a store says of a scope's prebuilt index before it is downloaded.

    ``seq`` is the change-feed position the index covers; ``tombstones`` the ids it holds that
    were removed before ``seq`` (an HNSW graph cannot delete). ``kind``, ``vectors``,
    ``dimension`` and ``embedder`` repeat the file's header, so a node skips the download of a
    snapshot made with other settings.
    """

    scope: str
    snapshot: str
    seq: int
    kind: str
    vectors: str
    dimension: int
    embedder: str
    count: int
    bytes: int
    crc32: int
    chunks: int
    tombstones: list[int]
    created_at: float


class Sink(Protocol):
    """Where downloaded bytes go (a file, or a writer that checksums on the way)."""

    def write(self, data: bytes, /) -> int: ...


@runtime_checkable
class SnapshotStore(Protocol):
    """A store that keeps one prebuilt index per scope (PostgreSQL; a SQLite cache keeps its
    index files beside the database instead)."""

    def snapshot_head(self, scope: str) -> SnapshotHead | None: ...

    def publish_snapshot(
        self,
        scope: str,
        source: Path,
        meta: Mapping[str, Any],
        tombstones: Sequence[int],
        *,
        replacing: str = "",
    ) -> bool:
        """Replace ``scope``'s snapshot with the saved-index file ``source`` whose header is
        ``meta``; False (nothing written) when one as new exists or another node is publishing."""
        ...

    def download_snapshot(self, scope: str, target: Sink) -> SnapshotHead | None:
        """Write ``scope``'s snapshot into ``target``, as one consistent read; None when there
        is none (or it vanished meanwhile)."""
        ...
