"""The ``instructor_cache`` table of a cache: instructor's own exact cache (``cache=``).

The table belongs to storage so that maintenance (``stats``, export, import) can read and copy it
without importing instructor; ``semcache.integrations.instructor_cache.SQLiteCache`` is the
adapter instructor talks to. A SQLite file gets the table from the adapter (``SCHEMA``) on first
use; a PostgreSQL cache has it from its schema migrations (``semcache.storage.postgres``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from semcache.storage.base import Rows

TABLE = "instructor_cache"
HITS_COUNTER = "instructor_cache_hits"
MISSES_COUNTER = "instructor_cache_misses"

# Created by the adapter, not with the other tables: it belongs to the integration, and a file that never
# used it does not carry it. Idempotent, so every process may run it on open.
SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        created_at REAL,
        expires_at REAL,
        hits INTEGER
    )""",
    # Reclaiming expired rows on every write must not scan the table.
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expires ON {TABLE} (expires_at)",
)

BUMP_COUNTER = (
    "INSERT INTO counters (name, value) VALUES (?, 1) "
    "ON CONFLICT(name) DO UPDATE SET value = counters.value + 1"  # qualified: PostgreSQL too
)


@dataclass(frozen=True)
class InstructorCacheStats:
    """What the ``instructor_cache`` table holds, and how often it answered.

    ``entries`` are live rows; ``expired`` rows are past their TTL, never served, and deleted on the
    next write. ``hits`` and ``misses`` are totals since the file was created, across processes.
    """

    entries: int
    expired: int
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float:
        """Hits over lookups; 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


def instructor_cache_stats(store: Rows, *, now: float | None = None) -> InstructorCacheStats:
    """The ``instructor_cache`` counts of any semcache cache, for ``semcache stats``.

    Read-only: on a file that never used the integration it reports zeros without creating the
    table.
    """
    now = time.time() if now is None else now
    exists = bool(store.columns(TABLE))
    live = expired = 0
    with store.reading() as conn:
        if exists:
            live, expired = conn.execute(
                "SELECT coalesce(sum(CASE WHEN expires_at IS NULL OR expires_at > ? THEN 1 "
                "ELSE 0 END), 0), coalesce(sum(CASE WHEN expires_at IS NOT NULL AND "
                f"expires_at <= ? THEN 1 ELSE 0 END), 0) FROM {TABLE}",
                (now, now),
            ).fetchone()
        counters = dict(
            conn.execute(
                "SELECT name, value FROM counters WHERE name IN (?, ?)",
                (HITS_COUNTER, MISSES_COUNTER),
            ).fetchall()
        )
    return InstructorCacheStats(
        entries=int(live),
        expired=int(expired),
        hits=int(counters.get(HITS_COUNTER, 0)),
        misses=int(counters.get(MISSES_COUNTER, 0)),
    )
