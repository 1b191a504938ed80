"""Bookkeeping statements on PostgreSQL: hit counts, counters, vetoes, the audit log, thresholds
and shadow checks (the tables beside ``entries``; ``semcache.storage.bookkeeping`` on SQLite).

Every node flushes its ledger about once a second into the same rows, so rows are locked in one
order (entries by id, counters by name): two flushes then wait for each other instead of
deadlocking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

_LOG_INSERTS = {
    "vetoes": "INSERT INTO vetoes (created_at, scope, entry_id, query, candidate, similarity, "
    "stage, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
    "audit": "INSERT INTO audit (created_at, namespace, scope, query, entry_id, matched_prompt, "
    "similarity, verdict, reason, latency_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
}


def record(
    conn: Any,
    hits: Mapping[int, tuple[int, float]],
    counters: Mapping[str, int],
    rows: Mapping[str, Sequence[tuple[Any, ...]]],
) -> None:
    """Write a ledger's notes inside the caller's transaction."""
    with conn.cursor() as cursor:
        for table, table_rows in rows.items():
            if table_rows:
                cursor.executemany(_LOG_INSERTS[table], list(table_rows))
        if hits:
            cursor.executemany(
                "UPDATE entries SET hits = hits + %s, "
                "last_hit_at = greatest(coalesce(last_hit_at, 0), %s) WHERE id = %s",
                [(n, ts, entry_id) for entry_id, (n, ts) in sorted(hits.items())],
            )
        bumps = sorted((name, n) for name, n in counters.items() if n)
        if bumps:
            cursor.executemany(
                "INSERT INTO counters (name, value) VALUES (%s, %s) ON CONFLICT (name) "
                "DO UPDATE SET value = counters.value + excluded.value",
                bumps,
            )


def trim_audit(conn: Any, older_than: float | None, max_rows: int | None) -> int:
    removed = 0
    if older_than is not None:
        removed += conn.execute("DELETE FROM audit WHERE created_at < %s", (older_than,)).rowcount
    if max_rows is not None:
        removed += conn.execute(
            "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC "
            "LIMIT 1 OFFSET %s)",
            (max_rows,),
        ).rowcount
    return int(removed)


def set_threshold(conn: Any, target: str, threshold: float | None, source: str) -> None:
    if threshold is None:
        conn.execute("DELETE FROM thresholds WHERE target = %s", (target,))
        return
    conn.execute(
        "INSERT INTO thresholds (target, threshold, source, updated_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (target) DO UPDATE SET threshold = excluded.threshold, "
        "source = excluded.source, updated_at = excluded.updated_at",
        (target, threshold, source, time.time()),
    )


def vectors_by_entry(rows: Sequence[tuple[Any, Any]], dimension: int) -> dict[int, np.ndarray]:
    """Feedback rows ``(entry id, query embedding)`` grouped by entry (damaged blobs skipped)."""
    found: dict[int, list[np.ndarray]] = {}
    for entry_id, blob in rows:
        if blob is not None and len(blob) == dimension * 4:
            found.setdefault(int(entry_id), []).append(np.frombuffer(bytes(blob), dtype="<f4"))
    return {k: np.vstack(v) for k, v in found.items()}


def add_shadow(
    conn: Any, scope: str, entry_id: int, similarity: float, agree: bool, fields: list[str]
) -> None:
    conn.execute(
        "INSERT INTO shadow (created_at, scope, entry_id, similarity, agree, differing_fields) "
        "VALUES (%s, %s, %s, %s, %s, %s)",
        (time.time(), scope, entry_id, similarity, agree, json.dumps(fields)),
    )


def shadow_counts(conn: Any) -> dict[str, tuple[int, int, float | None]]:
    """Per scope: (samples, agreements, highest similarity of a disagreement)."""
    rows = conn.execute(
        "SELECT scope, count(*), count(*) FILTER (WHERE agree), "
        "max(similarity) FILTER (WHERE NOT agree) FROM shadow GROUP BY scope"
    ).fetchall()
    return {str(s): (int(n), int(a), None if m is None else float(m)) for s, n, a, m in rows}
