"""Bookkeeping tables of a cache file: counters, hit counts, vetoes, the audit log, thresholds and
their history, feedback, shadow checks and near-miss labels. ``SQLiteStore`` holds one
``Bookkeeping`` over its own connections (``sqlite_connect.py``), so every write goes through the
cache's one ``transaction()``."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from semcache.errors import UsageError
from semcache.types import Label, ThresholdChange

_LOG_INSERTS = {
    "vetoes": "INSERT INTO vetoes (created_at, scope, entry_id, query, candidate, similarity, "
    "stage, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "audit": "INSERT INTO audit (created_at, namespace, scope, query, entry_id, matched_prompt, "
    "similarity, verdict, reason, latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "near_misses": "INSERT INTO near_misses (created_at, scope, entry_id, similarity, threshold, "
    "stage, agree, differing_fields, query, candidate, answer_json, candidate_answer_json, rival) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
}
# The logs a retention applies to (``trim_log``); a fixed set, because the name goes into SQL.
LOGS = ("audit", "near_misses")


class Connections(Protocol):
    """What bookkeeping needs of a SQLite database: this thread's connection and one write
    transaction (``SQLiteConnections``)."""

    def connection(self) -> sqlite3.Connection: ...

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...


class Bookkeeping:
    """Reads and writes of the tables beside ``entries``."""

    def __init__(self, db: Connections) -> None:
        self._db = db

    # -- hit bookkeeping --------------------------------------------------------------------

    def record(
        self,
        hits: Mapping[int, tuple[int, float]],
        counters: Mapping[str, int],
        rows: Mapping[str, Sequence[tuple[Any, ...]]] | None = None,
    ) -> None:
        """Write buffered bookkeeping in one transaction: hit counts (entry id -> (hits, last hit
        time)), counter increments, and rows for the ``vetoes``, ``audit`` and ``near_misses``
        tables."""
        rows = rows or {}
        if not hits and not any(counters.values()) and not any(rows.values()):
            return
        with self._db.transaction() as conn:
            for table, table_rows in rows.items():
                if table_rows:
                    conn.executemany(_LOG_INSERTS[table], table_rows)
            conn.executemany(
                "UPDATE entries SET hits = hits + ?, last_hit_at = max(coalesce(last_hit_at, 0), ?) "
                "WHERE id = ?",
                [(n, ts, entry_id) for entry_id, (n, ts) in hits.items()],
            )
            conn.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                [(name, n) for name, n in counters.items() if n],
            )

    def trim_log(self, table: str, *, older_than: float | None, max_rows: int | None) -> int:
        """Apply a log's retention: drop rows older than a time and beyond a row count."""
        if table not in LOGS:
            raise UsageError(f"not a log table: {table!r} (one of {', '.join(LOGS)})")
        with self._db.transaction() as conn:
            removed = 0
            if older_than is not None:
                removed += conn.execute(
                    f"DELETE FROM {table} WHERE created_at < ?", (older_than,)
                ).rowcount
            if max_rows is not None:
                removed += conn.execute(
                    f"DELETE FROM {table} WHERE id <= (SELECT id FROM {table} ORDER BY id DESC "
                    "LIMIT 1 OFFSET ?)",
                    (max_rows,),
                ).rowcount
        return int(removed)

    # -- thresholds and feedback --------------------------------------------------------------

    def thresholds(self) -> dict[str, float]:
        rows = self._db.connection().execute("SELECT target, threshold FROM thresholds").fetchall()
        return {str(t): float(v) for t, v in rows}

    def set_threshold(
        self,
        target: str,
        threshold: float | None,
        source: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        """Persist (or, with None, remove) a threshold, and log the change with its old value in
        the same transaction, so no change, by any caller, goes unrecorded."""
        now = time.time()
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT threshold FROM thresholds WHERE target = ?", (target,)
            ).fetchone()
            old = None if row is None else float(row[0])
            if old != threshold:
                conn.execute(
                    "INSERT INTO threshold_changes (created_at, target, old, new, source, "
                    "evidence) VALUES (?, ?, ?, ?, ?, ?)",
                    (now, target, old, threshold, source, json.dumps(dict(evidence or {}))),
                )
            if threshold is None:
                conn.execute("DELETE FROM thresholds WHERE target = ?", (target,))
            else:
                conn.execute(
                    "INSERT INTO thresholds (target, threshold, source, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT(target) DO UPDATE SET "
                    "threshold = excluded.threshold, source = excluded.source, "
                    "updated_at = excluded.updated_at",
                    (target, threshold, source, now),
                )

    def threshold_changes(self, limit: int | None = 20) -> list[ThresholdChange]:
        """Logged threshold changes, newest first."""
        sql = (
            "SELECT created_at, target, old, new, source, evidence FROM threshold_changes "
            "ORDER BY id DESC"
        )
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql, params = sql + " LIMIT ?", (limit,)
        rows = self._db.connection().execute(sql, params).fetchall()
        return [
            ThresholdChange(float(at), str(t), old, new, str(src), json.loads(ev or "{}"))
            for at, t, old, new, src, ev in rows
        ]

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
        blob = None if embedding is None else np.ascontiguousarray(embedding, "<f4").tobytes()
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO feedback (created_at, entry_id, scope, query, candidate, similarity, "
                "query_embedding, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (time.time(), entry_id, scope, query, candidate, similarity, blob, note),
            )

    def wrong_queries(self, entry_ids: list[int], dimension: int) -> dict[int, np.ndarray]:
        """For each entry with feedback, the embeddings of the queries it was wrong for."""
        if not entry_ids:
            return {}
        marks = ",".join("?" * len(entry_ids))
        rows = (
            self._db.connection()
            .execute(
                f"SELECT entry_id, query_embedding FROM feedback WHERE entry_id IN ({marks}) "
                "AND query_embedding IS NOT NULL",
                entry_ids,
            )
            .fetchall()
        )
        found: dict[int, list[np.ndarray]] = {}
        for entry_id, blob in rows:
            if isinstance(blob, bytes) and len(blob) == dimension * 4:
                found.setdefault(int(entry_id), []).append(np.frombuffer(blob, dtype="<f4"))
        return {k: np.vstack(v) for k, v in found.items()}

    def add_shadow(
        self, scope: str, entry_id: int, similarity: float, agree: bool, fields: list[str]
    ) -> None:
        with self._db.transaction() as conn:
            conn.execute(
                "INSERT INTO shadow (created_at, scope, entry_id, similarity, agree, "
                "differing_fields) VALUES (?, ?, ?, ?, ?, ?)",
                (time.time(), scope, entry_id, similarity, int(agree), json.dumps(fields)),
            )

    def shadow_counts(self) -> dict[str, tuple[int, int, float | None]]:
        """Per scope: (samples, agreements, highest similarity of a disagreement)."""
        rows = (
            self._db.connection()
            .execute(
                "SELECT scope, count(*), sum(agree), max(CASE WHEN agree = 0 THEN similarity END) "
                "FROM shadow GROUP BY scope"
            )
            .fetchall()
        )
        return {str(s): (int(n), int(a), None if m is None else float(m)) for s, n, a, m in rows}

    def labels(self, scope: str | None = None) -> list[Label]:
        """Every live label (``semcache.types.Label``), of one scope or all: near misses, shadow
        checks, and semantic hits marked wrong (exact hits marked wrong say nothing about a
        similarity, so they are left out)."""
        where, params = ("WHERE scope = ?", (scope,)) if scope is not None else ("", ())
        semantic = "query_embedding IS NOT NULL AND similarity IS NOT NULL"
        sql = f"""
            SELECT scope, similarity, agree, 'near_miss', stage, created_at, rival
                FROM near_misses {where}
            UNION ALL
            SELECT scope, similarity, agree, 'shadow', '', created_at, NULL FROM shadow {where}
            UNION ALL
            SELECT scope, similarity, 0, 'feedback', '', created_at, NULL FROM feedback
                WHERE {semantic} {"AND scope = ?" if scope is not None else ""}"""
        rows = self._db.connection().execute(sql, params * 3).fetchall()
        return [Label.from_row(row) for row in rows]

    def counters(self) -> dict[str, int]:
        rows = self._db.connection().execute("SELECT name, value FROM counters").fetchall()
        return {str(name): int(value) for name, value in rows}
