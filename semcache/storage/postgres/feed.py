"""The change feed: how every node's FAISS replica learns what other nodes added and removed.

Why not ``WHERE id > watermark`` as on SQLite: an identity value is taken when a row is inserted,
not when its transaction commits, so entry 11 can become visible before entry 10; a replica that
read 11 and moved its watermark past 10 would never index 10. So each insert and delete of an entry
appends a row to ``feed`` whose number (``seq``) is taken *at commit*, by a deferred trigger, under
a transaction-level advisory lock (``migrations.py``). PostgreSQL makes a transaction visible
before it releases its locks, so when a writer gets the lock every earlier holder is already
visible: numbers are handed out in commit order, and a reader that sees ``seq = n`` sees every
committed row below ``n``. A replica's cursor is the highest ``seq`` it applied; it reads
``seq > cursor`` and never misses a row. (The price: commits of entries are serialized, as SQLite
serializes all writes; lookups and bookkeeping never take the lock.)

A removal (delete, expiry, eviction, replacement) reaches every replica the same way. A scope's
first load reads its entries and the feed position in one REPEATABLE READ snapshot. Feed rows older
than ``RETENTION`` are pruned; a replica whose cursor is older than what was pruned reloads the
scope (``Changes.reload``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from semcache.storage.base import Changes

RETENTION = 24 * 3600.0  # seconds of feed kept: a replica idle for longer reloads its scopes
BATCH = 20_000  # feed rows read per statement while catching up
# A full load reads every vector of a scope in one statement (1.5 GB at a million MiniLM
# vectors): more than a lookup's statement budget allows, so it gets its own.
FULL_LOAD_TIMEOUT_MS = 300_000

# One statement, so one snapshot: the pruning mark and the rows after ``cursor`` agree. The LATERAL
# joins make the plan a nested loop from the (usually empty) feed rows: a plain join let the planner
# hash-join all of ``entries`` and cost 185 ms per lookup at 100k entries.
_SINCE = """SELECT p.pruned_through, f.seq, f.op, f.entry_id, e.embedding
FROM (SELECT pruned_through FROM feed_state WHERE one) p
LEFT JOIN LATERAL (SELECT seq, op, entry_id FROM feed WHERE scope = %s AND seq > %s
                   ORDER BY seq LIMIT %s) f ON true
LEFT JOIN LATERAL (SELECT embedding FROM entries WHERE id = f.entry_id AND f.op = 1) e ON true
ORDER BY f.seq"""


def changes(conn: Any, scope: str, cursor: int, dimension: int) -> Changes:
    """What ``scope``'s replica at ``cursor`` applies; a full load when ``cursor`` is 0."""
    if cursor <= 0:
        return _full(conn, scope, dimension)
    ids: list[int] = []
    blobs: list[bytes] = []
    removed: list[int] = []
    width = dimension * 4
    while True:
        rows = conn.execute(_SINCE, (scope, cursor, BATCH), binary=True).fetchall()
        if rows and int(rows[0][0]) > cursor:
            return Changes(_no_ids(), np.zeros((0, dimension), np.float32), reload=True)
        read = 0
        for _, seq, op, entry_id, blob in rows:
            if seq is None:
                continue
            read += 1
            cursor = int(seq)
            if op < 0:
                removed.append(int(entry_id))
            elif blob is not None and len(blob) == width:
                # A row already deleted again has no embedding here; its removal follows.
                ids.append(int(entry_id))
                blobs.append(bytes(blob))
        if read < BATCH:
            break
    return Changes(_ids(ids), _vectors(blobs, dimension), removed, cursor)


def _full(conn: Any, scope: str, dimension: int) -> Changes:
    """Every embedded entry of ``scope`` and the feed position they are current at, in one
    snapshot: entries of transactions after that position are read from the feed later."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(f"SET LOCAL statement_timeout = {FULL_LOAD_TIMEOUT_MS}")
        row = conn.execute(
            "SELECT greatest(coalesce((SELECT max(seq) FROM feed), 0), pruned_through) "
            "FROM feed_state WHERE one"
        ).fetchone()
        rows = conn.execute(
            "SELECT id, embedding FROM entries WHERE scope = %s AND embedding IS NOT NULL "
            "ORDER BY id",
            (scope,),
            binary=True,
        ).fetchall()
    width = dimension * 4
    good = [(int(i), bytes(b)) for i, b in rows if len(b) == width]
    return Changes(
        _ids([i for i, _ in good]),
        _vectors([b for _, b in good], dimension),
        cursor=int(row[0]),
    )


def prune(conn: Any, older_than: float) -> int:
    """Delete feed rows older than ``older_than`` (epoch seconds); returns how many.

    ``pruned_through`` moves in the same transaction, so a replica reading the feed sees either
    the rows or the mark that they are gone, never neither.
    """
    with conn.transaction():
        row = conn.execute(
            "WITH gone AS (DELETE FROM feed WHERE created_at < %s RETURNING seq) "
            "SELECT count(*), max(seq) FROM gone",
            (older_than,),
        ).fetchone()
        if row[1] is not None:
            conn.execute(
                "UPDATE feed_state SET pruned_through = greatest(pruned_through, %s) WHERE one",
                (row[1],),
            )
    return int(row[0])


def _ids(values: list[int]) -> np.ndarray:
    return np.fromiter(values, dtype=np.int64, count=len(values))


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


def _vectors(blobs: list[bytes], dimension: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dimension), dtype=np.float32)
    joined = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(-1, dimension)
    return joined.astype(np.float32, copy=False)
