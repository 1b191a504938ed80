"""Bookkeeping statements on PostgreSQL: hit counts, counters, vetoes, the audit log, thresholds
and their history, feedback, shadow checks and near-miss labels (the tables beside ``entries``;
``semcache.storage.bookkeeping`` on SQLite).

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

from semcache.errors import UsageError
from semcache.storage.bookkeeping import LOGS
from semcache.types import Label, ThresholdChange

_LOG_INSERTS = {
    "vetoes": "INSERT INTO vetoes (created_at, scope, entry_id, query, candidate, similarity, "
    "stage, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
    "audit": "INSERT INTO audit (created_at, namespace, scope, query, entry_id, matched_prompt, "
    "similarity, verdict, reason, latency_ms) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
    "near_misses": "INSERT INTO near_misses (created_at, scope, entry_id, similarity, threshold, "
    "stage, agree, differing_fields, query, candidate, answer_json, candidate_answer_json, rival) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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


def trim_log(conn: Any, table: str, older_than: float | None, max_rows: int | None) -> int:
    """A log's retention; ``table`` is one of ``LOGS`` (checked: the name goes into SQL)."""
    if table not in LOGS:
        raise UsageError(f"not a log table: {table!r} (one of {', '.join(LOGS)})")
    removed = 0
    if older_than is not None:
        removed += conn.execute(
            f"DELETE FROM {table} WHERE created_at < %s", (older_than,)
        ).rowcount
    if max_rows is not None:
        removed += conn.execute(
            f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC "
            "LIMIT 1 OFFSET %s)",
            (max_rows,),
        ).rowcount
    return int(removed)


def set_threshold(
    conn: Any,
    target: str,
    threshold: float | None,
    source: str,
    evidence: Mapping[str, Any] | None = None,
) -> None:
    """Persist (or remove) a threshold and log the change with its old value, in the caller's
    transaction; the old row is locked so two nodes changing it log both changes in order."""
    now = time.time()
    row = conn.execute(
        "SELECT threshold FROM thresholds WHERE target = %s FOR UPDATE", (target,)
    ).fetchone()
    old = None if row is None else float(row[0])
    if old != threshold:
        conn.execute(
            "INSERT INTO threshold_changes (created_at, target, old, new, source, evidence) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (now, target, old, threshold, source, json.dumps(dict(evidence or {}))),
        )
    if threshold is None:
        conn.execute("DELETE FROM thresholds WHERE target = %s", (target,))
        return
    conn.execute(
        "INSERT INTO thresholds (target, threshold, source, updated_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (target) DO UPDATE SET threshold = excluded.threshold, "
        "source = excluded.source, updated_at = excluded.updated_at",
        (target, threshold, source, now),
    )


def threshold_changes(conn: Any, limit: int | None) -> list[ThresholdChange]:
    """Logged threshold changes, newest first."""
    rows = conn.execute(
        "SELECT created_at, target, old, new, source, evidence FROM threshold_changes "
        "ORDER BY id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [
        ThresholdChange(float(at), str(t), old, new, str(src), json.loads(ev or "{}"))
        for at, t, old, new, src, ev in rows
    ]


def labels(conn: Any, scope: str | None) -> list[Label]:
    """Near misses, shadow checks and semantic hits marked wrong, as on SQLite."""
    where, params = ("WHERE scope = %s", (scope,)) if scope is not None else ("", ())
    and_scope = "AND scope = %s" if scope is not None else ""
    rows = conn.execute(
        f"""SELECT scope, similarity, agree <> 0, 'near_miss', stage, created_at, rival
                FROM near_misses {where}
            UNION ALL
            SELECT scope, similarity, agree, 'shadow', '', created_at, NULL FROM shadow {where}
            UNION ALL
            SELECT scope, similarity, false, 'feedback', '', created_at, NULL FROM feedback
                WHERE query_embedding IS NOT NULL AND similarity IS NOT NULL {and_scope}""",
        params * 3,
    ).fetchall()
    return [Label.from_row(row) for row in rows]


def counters(conn: Any) -> dict[str, int]:
    rows = conn.execute("SELECT name, value FROM counters").fetchall()
    return {str(name): int(value) for name, value in rows}


def thresholds(conn: Any) -> dict[str, float]:
    rows = conn.execute("SELECT target, threshold FROM thresholds").fetchall()
    return {str(t): float(v) for t, v in rows}


def add_feedback(
    conn: Any,
    entry_id: int,
    scope: str,
    query: str | None,
    candidate: str | None,
    similarity: float | None,
    embedding: np.ndarray | None,
    note: str,
) -> None:
    blob = None if embedding is None else np.ascontiguousarray(embedding, "<f4").tobytes()
    conn.execute(
        "INSERT INTO feedback (created_at, entry_id, scope, query, candidate, similarity, "
        "query_embedding, note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (time.time(), entry_id, scope, query, candidate, similarity, blob, note),
    )


def wrong_queries(conn: Any, entry_ids: list[int], dimension: int) -> dict[int, np.ndarray]:
    """For each of ``entry_ids`` with feedback, the embeddings of the queries it was wrong for."""
    rows = conn.execute(
        "SELECT entry_id, query_embedding FROM feedback WHERE entry_id = ANY(%s) "
        "AND query_embedding IS NOT NULL",
        (entry_ids,),
        binary=True,
    ).fetchall()
    return vectors_by_entry(rows, dimension)


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
