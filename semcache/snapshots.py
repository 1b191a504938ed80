"""Prebuilt snapshots of scopes' indexes, in a store shared by a fleet (``SnapshotStore``).

A node that built a scope's HNSW graph publishes it, with the change-feed position it covers,
unless the database holds one as new (``publish``). A node whose first lookup in a scope finds a
snapshot built with its settings (``usable``) downloads it instead of building, checks it
(checksum, embedder, dimension, vector kind, database, feed position: the checks a saved file
gets) and installs it with the ids removed before its position (``install``); applying the feed
from there is the caller's (``semcache.scopes``). A snapshot refused once is not downloaded again
by this process.

Separate from ``scopes``, which keeps every scope's index in step with the store whatever the
store: this is the traffic of whole index files through the database, which only a store that
keeps snapshots has, and it holds no lock of its own (``publish`` is handed the scope's catch-up
lock).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from semcache.index import file_format
from semcache.index.vector_index import VectorIndex
from semcache.storage.base import SnapshotHead, SnapshotStore

logger = logging.getLogger("semcache")

SNAPSHOT = "prebuilt index in the database"  # how a refused snapshot is named in the log


@dataclass
class ColdStart:
    """How this process got a scope's first large index (for benchmarks and logs): from a
    ``"snapshot"`` or a ``"build"``, the seconds until searchable, and their parts."""

    source: str
    seconds: float = 0.0
    download_s: float = 0.0  # the snapshot's bytes from the database to a temporary file
    install_s: float = 0.0  # checksum, FAISS deserialization, header checks
    catch_up_s: float = 0.0  # reading and applying the feed after the snapshot's position
    changes: int = 0  # entries added and removed by that catch-up
    refused: str = ""  # why a snapshot found was not used


@dataclass
class Published:
    """One snapshot this process published: sizes and seconds (export: the file written under
    the index's lock; upload: into the database)."""

    bytes: int
    vectors: int
    export_s: float
    upload_s: float


class Snapshots:
    """The snapshots of one cache's scopes in ``store``: which to use, and publishing ours."""

    def __init__(self, store: SnapshotStore) -> None:
        self.store = store
        self._bad: set[str] = set()  # names of snapshots refused: not downloaded again
        self._known_heads: dict[str, int] = {}  # scope -> feed position of the last snapshot seen

    def usable(self, index: VectorIndex, scope: str) -> SnapshotHead | None:
        """The scope's snapshot in the store, when its head row says it was built with this
        index's settings and it was not refused before (a mismatch is noted once)."""
        head = self.store.snapshot_head(scope)
        if head is None or head.snapshot in self._bad:
            return None
        ours = (index.dimension, index.vectors, index.embedder)
        if (head.dimension, head.vectors, head.embedder) != ours:
            self._bad.add(head.snapshot)
            index.files.refuse(
                scope, f"was built with {head.dimension} dimensions, vectors={head.vectors!r}, "
                f"embedder {head.embedder!r}", False, SNAPSHOT,
            )  # fmt: skip
            return None
        return head

    def install(
        self, index: VectorIndex, scope: str, head: SnapshotHead
    ) -> tuple[ColdStart, SnapshotHead | None]:
        """Download ``scope``'s snapshot (``head``), check it and install it in ``index``.
        Returns the cold start so far (download and install seconds, or why it was refused) and
        the head of the snapshot installed; None when none was (it is not tried again)."""
        began = time.monotonic()
        start = ColdStart("snapshot")
        with tempfile.TemporaryDirectory(prefix="semcache-snapshot-") as folder:
            path = Path(folder) / "scope.faiss"
            try:
                with open(path, "wb") as handle:
                    received = file_format.Receiver(handle)  # checksums as the bytes arrive
                    found = self.store.download_snapshot(scope, received)
            except (OSError, ValueError) as exc:  # a chunk missing, or no room for the file
                found, start.refused = None, f"could not be downloaded ({exc})"
                index.files.refuse(scope, start.refused, True, SNAPSHOT)
            start.download_s = time.monotonic() - began
            if found is not None:
                start.refused = index.load_snapshot(
                    scope, path, found.seq, found.tombstones, received.crc32
                )
                start.install_s = time.monotonic() - began - start.download_s
        if found is None or start.refused:
            self._bad.add(head.snapshot)
            return start, None
        return start, found

    def seen(self, scope: str, seq: int) -> None:
        """Note that the latest snapshot of ``scope`` this process knows covers the feed up to
        ``seq`` (a periodic publish skips when another node published since)."""
        self._known_heads[scope] = seq

    def publish(
        self,
        index: VectorIndex,
        scope: str,
        lock: threading.Lock,
        *,
        replacing: str = "",
        periodic: bool = False,
    ) -> Published | None:
        """Publish ``scope``'s HNSW index as the store's snapshot unless it holds one as new
        (or holds ``replacing``, a damaged one); None when nothing was published. Failures are
        logged, never raised: a snapshot is only an accelerator. ``lock``: the scope's catch-up
        lock, held while the file is exported.

        ``periodic`` (maintenance, not a build): also skip when another node published since
        this one last saw a snapshot of the scope, and count that as this node's publish.
        Every node applies the same feed, so they all reach ``scopes.PUBLISH_AFTER`` together: the
        first publishes, the others skip and start counting again."""
        store = self.store
        try:
            head = store.snapshot_head(scope)
            if head is not None and head.snapshot != replacing:
                newer = head.seq > self._known_heads.get(scope, 0)
                if head.seq >= index.watermark(scope) or (periodic and newer):
                    self._known_heads[scope] = head.seq
                    index.saved(scope)
                    return None
            with tempfile.TemporaryDirectory(prefix="semcache-snapshot-") as folder:
                path = Path(folder) / "scope.faiss"
                began = time.monotonic()
                # No catch-up of the scope while it is written: its feed position, additions
                # and removals are exported as one state.
                with lock:
                    exported = index.export(scope, path)
                if exported is None:
                    return None
                exported_at = time.monotonic()
                if not store.publish_snapshot(
                    scope, path, exported.meta, exported.tombstones, replacing=replacing
                ):
                    return None
                self._known_heads[scope] = int(exported.meta["watermark"])
                return Published(
                    path.stat().st_size, int(exported.meta["count"]), exported_at - began,
                    time.monotonic() - exported_at,
                )  # fmt: skip
        except Exception as exc:
            logger.warning("semcache: could not publish the index of a scope: %s", exc)
            return None
