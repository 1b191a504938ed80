"""A drop-in for instructor's own ``cache=`` parameter, on semcache's SQLite file or PostgreSQL.

instructor's cache protocol (``instructor.cache.BaseCache``: ``get(key)``, ``set(key, value, ttl)``)
only ever sees an opaque SHA-256 of the prepared request, so whatever sits behind it can only be an
exact cache. What instructor ships for it falls short in ways this module fixes:

* ``DiskCache`` pickles its values, so whoever can write the cache directory can run code in every
  process that reads it (CVE-2025-69872). ``SQLiteCache`` stores JSON text only and never
  unpickles: a value that is not a JSON document is refused (and logged at debug level).
* ``AutoCache`` lives in memory and ignores ``cache_ttl``. Here entries persist in the cache file,
  an expired entry is never returned, and expired rows are deleted when they are met and on every
  write.
* Reads and writes go through the store's ``transaction()`` (``BEGIN IMMEDIATE`` on a WAL file), so
  threads and processes can share one file; on a ``postgresql://`` cache, every app server of a
  fleet shares the table (the SQL is written once for both engines: ``semcache.storage.base.Rows``).

Rows live in their own table, ``instructor_cache``, beside the semantic cache's ``entries``: the
key is instructor's hash (it covers a hash of the client's API key and base URL, never the key
itself) and the value is instructor's JSON of the parsed model and the raw completion. Totals of
hits and misses go to the shared ``counters`` table, so they survive deleted rows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, cast

from instructor.cache import BaseCache

from semcache.errors import SemcacheError, UsageError
from semcache.pipeline import Front
from semcache.storage import Location, open_location
from semcache.storage.base import Rows
from semcache.storage.instructor_table import (
    BUMP_COUNTER,
    HITS_COUNTER,
    MISSES_COUNTER,
    SCHEMA,
    TABLE,
    InstructorCacheStats,
    instructor_cache_stats,
)
from semcache.storage.location import is_pool

logger = logging.getLogger("semcache")


class SQLiteCache(BaseCache):
    """instructor's ``cache=`` backend on a semcache cache: persistent, JSON only, TTL-aware.

    ``target`` is a path (the file is created if missing and closed by ``close()``), a
    ``postgresql://`` URL (the database a fleet shares; ``close()`` closes its connections), a
    ``psycopg_pool.ConnectionPool`` (each call borrows one of its connections; the pool stays
    open), an open ``Store``, or a ``SemanticCache`` whose storage to share (both stay owned by
    the caller)::

        cache = SQLiteCache("cache.db")     # or SQLiteCache("postgresql://app@db/cache")
        client = instructor.from_openai(OpenAI(), cache=cache)
        client.create(..., cache_namespace="support-bot", cache_ttl=3600)

    instructor's default ``cache_namespace`` is a random value drawn per client object, so an
    entry is only found again by the client that wrote it; pass an explicit ``cache_namespace`` to
    reuse answers across clients, processes and restarts.

    A failing read or write (a locked or damaged file) never breaks the call: ``get`` reports a
    miss and ``set`` drops the value, with a warning on the ``semcache`` logger. ``clock`` returns
    the current time in seconds (``time.time`` by default; tests pass a fake one).
    """

    def __init__(
        self,
        target: Location | Rows | Front,
        *,
        busy_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._owned = False
        pipeline = getattr(target, "pipeline", None)
        store = target if pipeline is None else getattr(pipeline, "store", None)
        if isinstance(target, (str, os.PathLike)) or is_pool(target):
            location = cast(Location, target)
            self._store: Rows = cast(Rows, open_location(location, busy_timeout=busy_timeout))
            self._owned = True
        elif getattr(store, "dialect", None) in ("sqlite", "postgresql"):
            self._store = cast(Rows, store)
        else:
            raise UsageError(
                "SQLiteCache takes a path, a postgresql:// URL, a psycopg_pool.ConnectionPool, "
                f"a semcache Store or a SemanticCache, not a {type(target).__name__}"
            )
        try:
            if self._store.dialect == "sqlite":  # PostgreSQL has it from a schema migration
                with self._store.transaction() as conn:
                    for statement in SCHEMA:
                        conn.execute(statement)
        except BaseException:
            self.close()
            raise

    # -- instructor's BaseCache protocol ----------------------------------------------------

    def get(self, key: str) -> str | None:
        """The JSON text stored under ``key``, or None when absent or expired.

        One write transaction per lookup: it counts the hit or miss and deletes an expired row in
        the same step, so concurrent processes never see a half-updated row. It costs about a
        millisecond, next to the provider call a miss is followed by.
        """
        if not isinstance(key, str):
            return None
        now = self._clock()
        try:
            with self._store.transaction() as conn:
                row = conn.execute(
                    f"SELECT value, expires_at FROM {TABLE} WHERE key = ?", (key,)
                ).fetchone()
                if row is not None and row[1] is not None and row[1] <= now:
                    conn.execute(f"DELETE FROM {TABLE} WHERE key = ?", (key,))
                    row = None
                if row is None:
                    conn.execute(BUMP_COUNTER, (MISSES_COUNTER,))
                    return None
                conn.execute(
                    f"UPDATE {TABLE} SET hits = coalesce(hits, 0) + 1 WHERE key = ?", (key,)
                )
                conn.execute(BUMP_COUNTER, (HITS_COUNTER,))
                return str(row[0])
        except (SemcacheError, sqlite3.Error) as exc:
            logger.warning(
                "semcache: instructor cache lookup failed, calling the provider: %s", exc
            )
            return None

    def set(self, key: str, value: Any, ttl: int | float | None = None) -> None:
        """Store ``value`` (JSON text, as instructor writes it) under ``key`` for ``ttl`` seconds.

        ``ttl=None`` keeps it until deleted; ``ttl <= 0`` only removes what the key held. A value
        that is not a JSON document (a pickle, a model instance, bytes) is refused, and the key's
        previous value is removed with it so a stale answer cannot outlive its replacement.
        """
        if not isinstance(key, str):
            raise UsageError(f"cache keys are strings, not {type(key).__name__}")
        ttl = _check_ttl(ttl)
        now = self._clock()
        text = _json_text(value)
        if text is None:
            logger.debug("semcache: not a JSON document (%s); not cached", type(value).__name__)
        try:
            with self._store.transaction() as conn:
                conn.execute(
                    f"DELETE FROM {TABLE} WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
                )
                if text is None or (ttl is not None and ttl <= 0):
                    conn.execute(f"DELETE FROM {TABLE} WHERE key = ?", (key,))
                    return
                conn.execute(
                    f"INSERT INTO {TABLE} (key, value, created_at, expires_at, hits) "
                    "VALUES (?, ?, ?, ?, 0) ON CONFLICT(key) DO UPDATE SET value = excluded.value, "
                    "created_at = excluded.created_at, expires_at = excluded.expires_at, hits = 0",
                    (key, text, now, None if ttl is None else now + ttl),
                )
        except (SemcacheError, sqlite3.Error) as exc:
            logger.warning("semcache: could not store an instructor cache value: %s", exc)

    # -- dict-like maintenance --------------------------------------------------------------

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it was there."""
        with self._store.transaction() as conn:
            return int(conn.execute(f"DELETE FROM {TABLE} WHERE key = ?", (key,)).rowcount) > 0

    def clear(self) -> int:
        """Remove every entry of this table (the semantic cache's entries are untouched)."""
        with self._store.transaction() as conn:
            return int(conn.execute(f"DELETE FROM {TABLE}").rowcount)

    def expire(self) -> int:
        """Delete every expired row now; returns how many. Writes do this anyway."""
        with self._store.transaction() as conn:
            cursor = conn.execute(
                f"DELETE FROM {TABLE} WHERE expires_at IS NOT NULL AND expires_at <= ?",
                (self._clock(),),
            )
            return int(cursor.rowcount)

    def stats(self) -> InstructorCacheStats:
        """Counts of live and expired rows, and total hits and misses."""
        return instructor_cache_stats(self._store, now=self._clock())

    def __len__(self) -> int:
        return self.stats().entries

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        with self._store.reading() as conn:
            row = conn.execute(f"SELECT expires_at FROM {TABLE} WHERE key = ?", (key,)).fetchone()
        return row is not None and (row[0] is None or row[0] > self._clock())

    @property
    def db(self) -> Rows:
        """The underlying store (shared with a ``SemanticCache`` when built from one)."""
        return self._store

    def close(self) -> None:
        """Close the store if this cache opened it; a borrowed store stays open. Idempotent."""
        if self._owned:
            self._store.close()

    def __enter__(self) -> SQLiteCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_text(value: Any) -> str | None:
    """``value`` when it is a str holding one JSON document (no NaN or Infinity), else None."""
    if not isinstance(value, str):
        return None
    try:
        json.loads(value, parse_constant=_reject_constant)
    except ValueError:  # JSONDecodeError, and the non-finite constants refused below
        return None
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_ttl(ttl: Any) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or math.isnan(ttl):
        raise UsageError(f"ttl is a number of seconds or None, got {ttl!r}")
    return float(ttl)
