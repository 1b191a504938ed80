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

Prebuilt snapshots (a store shared by a fleet: ``SnapshotStore``; ``semcache.snapshots``): a node
that built a scope's HNSW graph publishes it, and again once ``PUBLISH_AFTER`` vectors were added
since (from the periodic maintenance, in a thread). A node whose first lookup in a scope finds a
snapshot installs it in the background instead of building (lookups meanwhile: exact tier only,
as during a build), then applies the feed from its position, removals included: the result holds
what a fresh build would. A damaged or mismatched snapshot is treated as absent (one log line per
scope): the node builds, and then replaces a damaged one.

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
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

from semcache.embedding.base import Embedder
from semcache.errors import StoreUnavailableError
from semcache.index import file_format, vector_index
from semcache.index.stages import VectorKind
from semcache.index.vector_index import VectorIndex
from semcache.snapshots import ColdStart, Published, Snapshots
from semcache.storage.base import Changes, SnapshotHead, SnapshotStore, Store

logger = logging.getLogger("semcache")

# Vectors added to a scope before a node publishes a new snapshot. A new node inserts what was
# added since the snapshot into its HNSW graph (a few ms each on 2 shared cores), so this bounds
# its catch-up; a publish costs this node the export (its searches wait while the file is
# written: seconds at a million vectors) and an upload in a thread.
PUBLISH_AFTER = 10_000


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
        self.publishing: dict[str, threading.Event] = {}  # snapshots being published
        self.cold_starts: dict[str, ColdStart] = {}
        self.published: dict[str, Published] = {}
        # Prebuilt snapshots, when the store keeps them (a fleet's database).
        self.snapshots = Snapshots(store) if isinstance(store, SnapshotStore) else None

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
                        embedder=embedder.name,
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
                if not index.has(scope) and self.snapshots is not None:
                    head = self.snapshots.usable(index, scope)
                    if head is not None:
                        self._in_background(scope, lambda: self._from_snapshot(index, scope, head))
                        return index
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
        logger.info(
            "semcache: building the index of a scope of %d entries in the background; its "
            "lookups use the exact tier until it is ready",
            len(changes.ids),
        )

        def build() -> str:
            damaged = self._build(index, scope, changes)
            with runs.lock:  # the build is a catch-up as of ``token``
                runs.token = token
            return damaged

        self._in_background(scope, build)

    def _in_background(self, scope: str, work: Callable[[], str]) -> None:
        """Run ``work`` (which makes ``scope``'s first index and returns the name of a damaged
        snapshot to replace, or "") in a thread, and then publish the result when this store
        keeps snapshots. Called holding the scope's lock: lookups skip the scope meanwhile."""
        done = self.building[scope] = threading.Event()
        published = self.publishing[scope] = threading.Event()

        def run() -> None:
            damaged, self.cold_starts[scope] = "", ColdStart("")
            try:
                damaged = work()
            except Exception as exc:  # the next lookup loads the scope again
                logger.warning("semcache: building the index of a scope failed: %s", exc)
            finally:
                del self.building[scope]
                done.set()
            try:
                if self.cold_starts[scope].source == "build":
                    self.publish(scope, replacing=damaged)
            finally:
                published.set()

        threading.Thread(target=run, name=f"semcache-build-{scope[:12]}", daemon=True).start()

    def _build(self, index: VectorIndex, scope: str, changes: Changes) -> str:
        """Make ``scope``'s index from a full load of its entries."""
        began = time.monotonic()
        index.add(scope, changes.ids, changes.vectors, cursor=changes.cursor)
        if changes.removed:
            self.forget(scope, changes.removed)
        self.cold_starts[scope] = ColdStart("build", time.monotonic() - began)
        return ""

    # -- prebuilt snapshots ---------------------------------------------------------------------

    def _from_snapshot(self, index: VectorIndex, scope: str, head: SnapshotHead) -> str:
        """Download, check and install ``scope``'s snapshot, then apply the feed after it; when
        the snapshot is refused (or the feed no longer reaches back to it), build instead.
        Returns the name of a snapshot found damaged ("" otherwise)."""
        assert self.snapshots is not None
        began = time.monotonic()
        start, found = self.snapshots.install(index, scope, head)
        if found is None:
            damaged = head.snapshot if start.refused else ""
            return self._rebuild(index, scope, start, began) or damaged
        changes = self.store.changes(scope, index.watermark(scope), index.dimension)
        if changes.reload:  # the feed was pruned past the snapshot: it is too old to use
            index.drop(scope)
            start.refused = "is older than the change feed kept"
            return self._rebuild(index, scope, start, began)
        self.snapshots.seen(scope, found.seq)
        index.add(scope, changes.ids, changes.vectors, cursor=changes.cursor)
        if changes.removed:
            self.forget(scope, changes.removed)
        if not index.has(scope):  # the removals left too many tombstones: build afresh
            start.refused = "holds too many removed entries"
            return self._rebuild(index, scope, start, began)
        start.changes = len(changes.ids) + len(changes.removed)
        start.seconds = time.monotonic() - began
        start.catch_up_s = start.seconds - start.download_s - start.install_s
        self.cold_starts[scope] = start
        logger.info(
            "semcache: loaded the prebuilt index of a scope (%d vectors) in %.1f s, then %d "
            "changes from the feed", index.size(scope), start.seconds, start.changes,
        )  # fmt: skip
        return ""

    def _rebuild(self, index: VectorIndex, scope: str, start: ColdStart, began: float) -> str:
        """Build ``scope`` from its entries after a snapshot was not used (``start.refused``)."""
        self._build(index, scope, self.store.changes(scope, 0, index.dimension))
        self.cold_starts[scope] = ColdStart(
            "build", time.monotonic() - began, start.download_s, refused=start.refused
        )
        return ""

    def publish(
        self, scope: str, *, replacing: str = "", periodic: bool = False
    ) -> Published | None:
        """Publish ``scope``'s HNSW index as the store's snapshot when the store keeps them
        (``Snapshots.publish``), and keep its report; None when nothing was published."""
        index = self.index
        if self.snapshots is None or index is None or index.kind(scope) != "hnsw":
            return None
        lock = self._runs(scope).lock  # no catch-up of the scope while it is exported
        report = self.snapshots.publish(index, scope, lock, replacing=replacing, periodic=periodic)
        if report is not None:
            self.published[scope] = report
        return report

    def wait(
        self, scope: str | None = None, timeout: float | None = None, *, publishing: bool = False
    ) -> bool:
        """Wait until ``scope``'s index (None: every scope's) is no longer being built (and with
        ``publishing``, published), for benchmarks and tools that need it whole; False when
        ``timeout`` seconds passed first."""
        groups = [self.building, self.publishing] if publishing else [self.building]
        if scope is not None:
            waits = [group.get(scope) for group in groups]
        else:
            waits = [done for group in groups for done in list(group.values())]
        return all(done is None or done.wait(timeout) for done in waits)

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

    def save(self, min_unsaved: int = 1, *, publish: bool = False) -> None:
        """Save large scopes' indexes beside the database (see ``VectorIndex.save``); with
        ``publish``, also publish, in a thread, the snapshot of each scope that gained
        ``PUBLISH_AFTER`` vectors since its last one (a store that keeps snapshots)."""
        index = self.index
        if index is None:
            return
        index.save(min_unsaved=min_unsaved)
        if not publish or self.snapshots is None:
            return
        with self._lock:
            scopes = list(self._catch_ups)
        for scope in scopes:
            busy = self.publishing.get(scope)
            if (busy is not None and not busy.is_set()) or scope in self.building:
                continue
            if index.kind(scope) == "hnsw" and index.unsaved(scope) >= PUBLISH_AFTER:
                done = self.publishing[scope] = threading.Event()

                def run(scope: str = scope, done: threading.Event = done) -> None:
                    try:
                        self.publish(scope, periodic=True)
                    finally:
                        done.set()

                name = f"semcache-publish-{scope[:12]}"
                threading.Thread(target=run, name=name, daemon=True).start()
