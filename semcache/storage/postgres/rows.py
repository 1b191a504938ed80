"""Whole tables in and out of a PostgreSQL cache, for moving a cache between engines.

``read`` streams a table's rows from one REPEATABLE READ snapshot (entries, settings and
thresholds agree even while nodes write); ``add_entries`` inserts rows from another cache with new
ids, skipping exact keys the database holds, ``add_thresholds`` adds thresholds it lacks and
``add_instructor_rows`` instructor ``cache=`` rows whose key it lacks. The
change feed carries the new entries to every node's replica, as it does any insert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

# Columns of ``entries`` another engine's row may bring (``id`` is always assigned here).
ENTRY_COLUMNS = (
    "exact_key", "scope", "namespace", "model", "schema_name", "prompt", "request_json",
    "response_json", "raw_json", "usage_json", "total_tokens", "embedding", "created_at",
    "last_hit_at", "hits", "expires_at",
)  # fmt: skip
TABLES = {
    "entries": ("id", *ENTRY_COLUMNS),
    "settings": ("key", "value"),
    "thresholds": ("target", "threshold", "source", "updated_at"),
    "instructor_cache": ("key", "value", "created_at", "expires_at", "hits"),
}


class Snapshot:
    """Reads of one snapshot: ``rows(table)`` streams ``TABLES[table]`` columns in key order."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def rows(self, table: str) -> Iterator[tuple[Any, ...]]:
        columns = TABLES[table]  # a fixed name: never text from outside
        with self._conn.cursor(name=f"semcache_{table}", binary=True) as cursor:
            cursor.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {columns[0]}")
            for row in cursor:
                yield tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)


@contextlib.contextmanager
def read(conn: Any) -> Iterator[Snapshot]:
    """A REPEATABLE READ transaction on ``conn`` (an autocommit connection)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield Snapshot(conn)


def add_entries(conn: Any, rows: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    """Insert rows (``ENTRY_COLUMNS`` and the source's ``id``) inside the caller's transaction;
    returns source id -> new id for the rows inserted (a held exact key is skipped)."""
    sql = (
        f"INSERT INTO entries ({', '.join(ENTRY_COLUMNS)}) "
        f"VALUES ({', '.join(['%s'] * len(ENTRY_COLUMNS))}) "
        "ON CONFLICT (exact_key) DO NOTHING RETURNING id"
    )
    added: dict[int, int] = {}
    for row in rows:
        values = [row.get(c) for c in ENTRY_COLUMNS]
        values[ENTRY_COLUMNS.index("hits")] = row.get("hits") or 0
        values[ENTRY_COLUMNS.index("total_tokens")] = row.get("total_tokens") or 0
        new = conn.execute(sql, values).fetchone()
        if new is not None:
            added[int(row["id"])] = int(new[0])
    return added


def add_instructor_rows(conn: Any, rows: Iterable[Sequence[Any]]) -> int:
    """Add ``(key, value, created_at, expires_at, hits)`` rows of instructor's ``cache=`` table
    whose key is not held here (the database's value is kept)."""
    added = 0
    for row in rows:
        added += conn.execute(
            "INSERT INTO instructor_cache (key, value, created_at, expires_at, hits) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
            tuple(row),
        ).rowcount
    return added


def add_thresholds(conn: Any, rows: Iterable[Sequence[Any]]) -> int:
    """Add ``(target, threshold, source, updated_at)`` rows whose target is not set here."""
    added = 0
    for row in rows:
        added += conn.execute(
            "INSERT INTO thresholds (target, threshold, source, updated_at) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (target) DO NOTHING",
            tuple(row),
        ).rowcount
    return added
