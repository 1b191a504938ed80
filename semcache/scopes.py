"""The FAISS index of every scope, derived from the store and kept in step with it.

Storage is the source of truth and holds every embedding; the index only proposes candidates, and
can be dropped and rebuilt from the store at any time (``catch_up`` adds every entry committed
since the index's watermark, by any process). A scope's index is dropped, to be rebuilt on its
next lookup, when removals leave it with too many tombstones.
"""

from __future__ import annotations

import threading
from pathlib import Path

from semcache.embedding.base import Embedder
from semcache.index import file_format
from semcache.index.vector_index import VectorIndex, VectorKind
from semcache.storage.base import Store


class Scopes:
    """One cache's index over ``store``: created on the first semantic lookup."""

    def __init__(self, store: Store, vectors: VectorKind) -> None:
        self.store = store
        self.vectors: VectorKind = vectors
        self.index: VectorIndex | None = None
        self._lock = threading.Lock()
        self._dimension_recorded = False

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
        ids, vectors = self.store.vectors_since(scope, index.watermark(scope), index.dimension)
        index.add(scope, ids, vectors)
        return index

    def forget(self, scope: str, ids: list[int]) -> None:
        """Drop entries deleted, expired or replaced in the store from ``scope``'s index."""
        if self.index is not None and self.index.remove(scope, ids):
            self.index.drop(scope)  # too many tombstones: rebuild from the store next time

    def save(self, min_unsaved: int = 1) -> None:
        """Save large scopes' indexes beside the database (see ``VectorIndex.save``)."""
        if self.index is not None:
            self.index.save(min_unsaved=min_unsaved)
