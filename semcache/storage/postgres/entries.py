"""Statements on PostgreSQL's ``entries`` table: the reads a lookup makes, the replace-or-insert of
a store, deletion, and the expiry and size bounds (``semcache.storage.sqlite`` on SQLite).

Each function runs inside the connection or transaction ``PostgresStore`` gives it, as ``books.py``
does for the tables beside ``entries``. The store keeps what surrounds the statements: choosing the
connection and the time budget, and announcing at commit which scopes changed (``listen.py``); this
module keeps what must agree row by row with the schema (``migrations.py``): the column lists, how
a row becomes a ``StoredEntry``, and how two nodes writing one exact key settle on one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from semcache.errors import StoreError
from semcache.storage.base import NewEntry
from semcache.storage.postgres import books, migrations
from semcache.types import StoredEntry

_COLUMNS = "id, exact_key, scope, prompt, response_json, raw_json, total_tokens"
_INSERT = (
    "INSERT INTO entries (exact_key, scope, namespace, model, schema_name, prompt, request_json, "
    "response_json, raw_json, usage_json, total_tokens, embedding, created_at, expires_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (exact_key) DO NOTHING RETURNING id"
)
_COUNT = "SELECT entries FROM feed_state WHERE one"  # kept by the feed trigger: no table scan


def get_exact(conn: Any, exact_key: str, now: float) -> StoredEntry | None:
    """The live entry stored under ``exact_key``, without its vector."""
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM entries WHERE exact_key = %s "
        "AND (expires_at IS NULL OR expires_at > %s)",
        (exact_key, now),
    ).fetchone()
    return _entry(row) if row else None


def get_many(conn: Any, ids: list[int], now: float) -> dict[int, StoredEntry]:
    """The live entries among ``ids`` with their vectors; expired and deleted ones are absent."""
    rows = conn.execute(
        f"SELECT {_COLUMNS}, embedding FROM entries WHERE id = ANY(%s) "
        "AND (expires_at IS NULL OR expires_at > %s)",
        (ids, now),
        binary=True,
    ).fetchall()
    return {int(row[0]): _entry(row) for row in rows}


def candidates(
    conn: Any, ids: list[int], now: float, dimension: int
) -> tuple[dict[int, StoredEntry], dict[int, np.ndarray]]:
    """``get_many`` and the queries marked wrong for each entry, in one statement (the feedback
    subquery uses the ``feedback_entry`` index)."""
    rows = conn.execute(
        f"SELECT {_COLUMNS}, embedding, ARRAY(SELECT f.query_embedding "
        "FROM feedback f WHERE f.entry_id = entries.id "
        "AND f.query_embedding IS NOT NULL ORDER BY f.id) "
        "FROM entries WHERE id = ANY(%s) AND (expires_at IS NULL OR expires_at > %s)",
        (ids, now),
        binary=True,
    ).fetchall()
    wrong = [(row[0], blob) for row in rows for blob in row[-1]]
    return (
        {int(row[0]): _entry(row[:-1]) for row in rows},
        books.vectors_by_entry(wrong, dimension),
    )


def insert(conn: Any, entry: NewEntry, now: float) -> tuple[int, int | None]:
    """Replace-or-insert one entry; returns ``(new id, replaced id or None)``.

    A node inserting the same key concurrently makes our insert do nothing; the loop then deletes
    its row (read committed: each statement sees the latest commits) and inserts again, so the
    later writer's answer stays, as on SQLite."""
    blob = (
        None
        if entry.embedding is None
        else np.ascontiguousarray(entry.embedding, dtype="<f4").tobytes()
    )
    values = (
        entry.exact_key, entry.scope, entry.namespace, entry.model, entry.schema_name,
        entry.prompt, entry.request_json, entry.response_json, entry.raw_json, entry.usage_json,
        entry.total_tokens, blob, now, entry.expires_at,
    )  # fmt: skip
    replaced: int | None = None
    for _ in range(5):
        old = conn.execute(
            "DELETE FROM entries WHERE exact_key = %s RETURNING id", (entry.exact_key,)
        ).fetchone()
        if old is not None:
            replaced = int(old[0])
        new = conn.execute(_INSERT, values).fetchone()
        if new is not None:
            return int(new[0]), replaced
    raise StoreError(f"could not write entry {entry.exact_key[:12]}: other nodes kept replacing it")


def delete(conn: Any, entry_id: int) -> list[str]:
    """Delete one entry; returns the scope it was in (empty when it was already gone)."""
    gone = conn.execute("DELETE FROM entries WHERE id = %s RETURNING scope", (entry_id,)).fetchall()
    return [str(row[0]) for row in gone]


def delete_expired(conn: Any, now: float) -> list[tuple[int, str]]:
    """Delete the entries expired at ``now``; returns their ``(id, scope)``."""
    gone = conn.execute(
        "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= %s RETURNING id, scope",
        (now,),
    ).fetchall()
    return [(int(i), str(s)) for i, s in gone]


def delete_lru(conn: Any, max_entries: int) -> list[tuple[int, str]]:
    """Delete the least recently used entries beyond ``max_entries`` in the caller's transaction;
    returns their ``(id, scope)``.

    Nodes evicting at once take turns (an advisory lock, held to the end of the transaction), so
    together they remove the excess once, not once each.
    """
    if int(conn.execute(_COUNT).fetchone()[0]) <= max_entries:
        return []
    conn.execute(f"SELECT pg_advisory_xact_lock({migrations.lock_key(migrations.EVICT_LOCK)})")
    excess = int(conn.execute(_COUNT).fetchone()[0]) - max_entries
    if excess <= 0:
        return []
    gone = conn.execute(
        "DELETE FROM entries WHERE id IN (SELECT id FROM entries "
        "ORDER BY coalesce(last_hit_at, created_at), id LIMIT %s) RETURNING id, scope",
        (excess,),
    ).fetchall()
    return [(int(i), str(s)) for i, s in gone]


def count(conn: Any) -> int:
    """Entries in the database (kept by the feed trigger: no table scan)."""
    return int(conn.execute(_COUNT).fetchone()[0])


def _entry(row: Sequence[Any]) -> StoredEntry:
    """A row of ``_COLUMNS`` (and the embedding, when selected) as the cache reads it."""
    blob = bytes(row[7]) if len(row) > 7 and row[7] is not None else None
    return StoredEntry(
        int(row[0]), str(row[1]), str(row[2]), row[3], str(row[4]), row[5], int(row[6]), blob
    )
