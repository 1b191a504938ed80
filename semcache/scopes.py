"""The FAISS index of every scope, derived from the store and kept in step with it.

Storage is the source of truth and holds every embedding; the index only proposes candidates, and
can be dropped and rebuilt from the store at any time (``catch_up`` applies every change committed
since the index's watermark, by any process: ``Store.changes``). A scope's index is dropped, to be
rebuilt on its next lookup, when removals leave it with too many tombstones.

A scope's first load that brings an HNSW graph's worth of vectors (``HNSW_AT``; minutes to build
at a million) is built in a background thread: meanwhile its semantic lookups find nothing (the
exact tier still answers), and no lookup waits for the build, in this scope or another.

A lookup reads the store's changes only when the store's ``change_token`` for the scope moved
since the latest catch-up (PostgreSQL: a notification, a reconnect or the fallback poll of
``semcache.storage.postgres.listen``); a store without that hint (SQLite) is asked every time.

One catch-up of a scope runs at a time. A lookup that waited for another thread's catch-up, which
began after the lookup arrived, uses its result instead of asking the store again; and when that
catch-up found the store unavailable, the lookup gives up at once. Without this, threads queued on
a slow database would each wait out its statement timeout in turn.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path

from semcache.embedding.base import Embedder
from semcache.errors import StoreUnavailableError
from semcache.index import file_format, vector_index
from semcache.index.vector_index import VectorIndex, VectorKind
from semcache.storage.base import Changes, Store

logger = logging.getLogger("semcache")


@dataclass
class _CatchUps:
    """The catch-ups of one scope: one at a time, and when the latest ones began."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    succeeded: float = -math.inf  # monotonic start of the latest catch-up that succeeded
    unavailable: float = -math.inf  # ... that found the store unavailable
    token: Hashable | None = None  # the store's change token the latest success was current at


class Scopes:
    """One cache's index over ``store``: created on the first semantic lookup."""

    def __init__(self, store: Store, vectors: VectorKind) -> None:
        self.store = store
        self.vectors: VectorKind = vectors
        self.index: VectorIndex | None = None
        self._lock = threading.Lock()
        self._dimension_recorded = False
        self._catch_ups: dict[str, _CatchUps] = {}
        # Scopes whose first index is being built, each with the event set when it is done.
        self.building: dict[str, threading.Event] = {}

    def folder(self) -> Path | None:
        """Where large scopes' indexes are saved: ``<database file>.index/`` (none in memory)."""
        path = self.store.path
        return None if path is None else file_format.folder_for(path)

    def record_dimension(self, width: int) -> None:
        """Record the vectors' width with the first one written, so tools reading the file know it."""
        if not self._dimension_recorded:
            self.store.check_settings({"embedder_dimension": str(width)})
            self._dimension_recorded = True

    def catch_up(self, scope: str, embedder: Embedder) -> VectorIndex:
        """The index, with every entry of ``scope`` committed so far (by any process) added."""
        index = self.index
        if index is None:
            with self._lock:
                if self.index is None:
                    dimension = embedder.dimension
                    self.store.check_settings({"embedder_dimension": str(dimension)})
                    self.index = VectorIndex(
                        dimension,
                        self.folder(),
                        self.store.settings().get("database_id", ""),
                        vectors=self.vectors,
                    )
                index = self.index
        if not index.has(scope):
            index.load(scope)  # a saved index spares rebuilding a large scope from SQLite
        runs = self._runs(scope)
        # Nothing committed in the scope since its last catch-up (no notification, reconnect or
        # fallback poll since): no round trip to the store.
        token = self.store.change_token(scope)
        if token is not None and token == runs.token and index.has(scope):
            return index
        # One catch-up of a scope at a time: a change feed's cursor is read, applied and advanced
        # as one step (two threads applying the same changes would add an entry twice).
        arrived = time.monotonic()
        with runs.lock:
            if scope in self.building or runs.succeeded > arrived:
                # Being built (nothing to search yet), or caught up by a catch-up that began
                # after this lookup arrived.
                return index
            if runs.unavailable > arrived:
                raise StoreUnavailableError("the store did not answer this scope's catch-up")
            started = time.monotonic()
            token = self.store.change_token(scope)  # taken before the read it vouches for
            try:
                changes = self.store.changes(scope, index.watermark(scope), index.dimension)
                if changes.reload:  # too far behind for the feed: rebuild from the store
                    index.drop(scope)
                    changes = self.store.changes(scope, 0, index.dimension)
            except StoreUnavailableError:
                runs.unavailable = started
                raise
            if not index.has(scope) and len(changes.ids) >= vector_index.HNSW_AT:
                self._build_in_background(index, scope, changes, runs, token)
                return index
            index.add(scope, changes.ids, changes.vectors, cursor=changes.cursor)
            if changes.removed:
                self.forget(scope, changes.removed)
            runs.succeeded, runs.token = started, token
        return index

    def _build_in_background(
        self,
        index: VectorIndex,
        scope: str,
        changes: Changes,
        runs: _CatchUps,
        token: Hashable | None,
    ) -> None:
        """Build a large scope's first index in a thread (called holding the scope's lock)."""
        done = self.building[scope] = threading.Event()
        logger.info(
            "semcache: building the index of a scope of %d entries in the background; its "
            "lookups use the exact tier until it is ready",
            len(changes.ids),
        )

        def build() -> None:
            try:
                index.add(scope, changes.ids, changes.vectors, cursor=changes.cursor)
                if changes.removed:
                    self.forget(scope, changes.removed)
                with runs.lock:  # the build is a catch-up as of ``token``
                    runs.token = token
            except Exception as exc:  # the next lookup loads the scope again
                logger.warning("semcache: building the index of a scope failed: %s", exc)
            finally:
                del self.building[scope]
                done.set()

        threading.Thread(target=build, name=f"semcache-build-{scope[:12]}", daemon=True).start()

    def wait(self, scope: str | None = None, timeout: float | None = None) -> bool:
        """Wait until ``scope``'s index (None: every scope's) is no longer being built, for
        benchmarks and tools that need it whole; False when ``timeout`` seconds passed first."""
        builds = [self.building.get(scope)] if scope is not None else list(self.building.values())
        return all(done is None or done.wait(timeout) for done in builds)

    def _runs(self, scope: str) -> _CatchUps:
        with self._lock:
            runs = self._catch_ups.get(scope)
            if runs is None:
                runs = self._catch_ups[scope] = _CatchUps()
            return runs

    def forget(self, scope: str, ids: list[int]) -> None:
        """Drop entries deleted, expired or replaced in the store from ``scope``'s index."""
        if self.index is not None and self.index.remove(scope, ids):
            self.index.drop(scope)  # too many tombstones: rebuild from the store next time

    def save(self, min_unsaved: int = 1) -> None:
        """Save large scopes' indexes beside the database (see ``VectorIndex.save``)."""
        if self.index is not None:
            self.index.save(min_unsaved=min_unsaved)
