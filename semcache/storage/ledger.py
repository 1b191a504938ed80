"""Buffered bookkeeping: hit counts, counters, vetoes, audit rows and near-miss labels, written
about once a second.

A hit must not pay for a write transaction (an exact hit is a single indexed read), and it must not
fail because another process holds the write lock. So the cache notes what happened here, and the
ledger writes it in one transaction when a second has passed, on ``stats()`` and on ``close()``.
A failed write keeps the notes for the next attempt.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from typing import Any

from semcache.errors import SemcacheError
from semcache.storage.base import Store

logger = logging.getLogger("semcache")

FLUSH_SECONDS = 1.0
_MAX_BUFFERED_ROWS = 50_000  # past this, log rows are dropped rather than grow without bound


class Ledger:
    """Notes taken on the hot path, flushed to the store in the background of later calls."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._hits: dict[int, tuple[int, float]] = {}
        self._counts: Counter[str] = Counter()
        self._rows: dict[str, list[tuple[Any, ...]]] = {
            "vetoes": [],
            "audit": [],
            "near_misses": [],
        }
        self._last_flush = time.monotonic()

    def hit(self, entry_id: int, tokens: int) -> None:
        now = time.time()
        with self._lock:
            n, _ = self._hits.get(entry_id, (0, 0.0))
            self._hits[entry_id] = (n + 1, now)
            self._counts["tokens_avoided"] += tokens

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def row(self, table: str, values: tuple[Any, ...]) -> None:
        with self._lock:
            rows = self._rows[table]
            if len(rows) < _MAX_BUFFERED_ROWS:
                rows.append(values)

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= FLUSH_SECONDS

    def flush(self) -> None:
        """Write everything noted so far; on failure keep it for the next flush."""
        with self._lock:
            hits, counts, rows = self._hits, self._counts, self._rows
            self._hits, self._counts = {}, Counter()
            self._rows = {table: [] for table in rows}
            self._last_flush = time.monotonic()
        try:
            self._store.record(hits, counts, rows)
        except (SemcacheError, OSError, sqlite3.Error) as exc:
            logger.debug("semcache: could not write bookkeeping yet: %s", exc)
            with self._lock:
                for entry_id, (n, ts) in hits.items():
                    old_n, old_ts = self._hits.get(entry_id, (0, 0.0))
                    self._hits[entry_id] = (old_n + n, max(old_ts, ts))
                self._counts.update(counts)
                for table, table_rows in rows.items():
                    self._rows[table][:0] = table_rows
