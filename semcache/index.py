"""The vector index: one FAISS inner-product index per scope, derived from the store.

One index per scope makes the scope a pre-filter: a search only ever sees vectors of requests that
agree on everything but their text, so a nearest neighbour from another schema, model or system
prompt cannot win (a post-filter on a global top-1 would instead turn into a miss, or worse).

Vector ids are the store's entry ids, which SQLite never reuses (AUTOINCREMENT). An id whose entry
was deleted by another process therefore never points at a different entry: the store simply has no
row for it, and the cache drops it from the index.

Vectors are L2-normalized, so the inner product is the cosine similarity, in [-1, 1].
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


class VectorIndex:
    """Per-scope FAISS indexes with a high-water mark each, for catching up from the store."""

    def __init__(self, dimension: int) -> None:
        import faiss  # imported here: only semantic lookups need it

        self._faiss: Any = faiss
        self.dimension = dimension
        self._indexes: dict[str, Any] = {}
        self._watermarks: dict[str, int] = {}
        self._lock = threading.Lock()

    def watermark(self, scope: str) -> int:
        """The highest entry id of ``scope`` already read from the store (0 when none)."""
        with self._lock:
            return self._watermarks.get(scope, 0)

    def add(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under their entry ids and advance the scope's watermark."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dimension)
        with self._lock:
            index = self._indexes.get(scope)
            if index is None:
                index = self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(self.dimension))
                self._indexes[scope] = index
            known = self._watermarks.get(scope, 0)
            fresh = ids > known  # a row read twice (own write, then catch-up) is added once
            if fresh.any():
                index.add_with_ids(vectors[fresh], ids[fresh])
                self._watermarks[scope] = int(ids[fresh].max())

    def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest entries of ``scope`` as ``(entry id, cosine similarity)``, best first."""
        with self._lock:
            index = self._indexes.get(scope)
            if index is None or index.ntotal == 0:
                return []
            query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dimension)
            sims, ids = index.search(query, min(k, index.ntotal))
        return [(int(i), float(s)) for i, s in zip(ids[0], sims[0], strict=True) if i >= 0]

    def remove(self, scope: str, ids: list[int]) -> None:
        """Drop entries that no longer exist in the store."""
        with self._lock:
            index = self._indexes.get(scope)
            if index is not None and ids:
                index.remove_ids(np.asarray(ids, dtype=np.int64))

    def size(self, scope: str | None = None) -> int:
        """Vectors held for one scope, or for all of them."""
        with self._lock:
            if scope is not None:
                index = self._indexes.get(scope)
                return int(index.ntotal) if index is not None else 0
            return sum(int(index.ntotal) for index in self._indexes.values())

    def clear(self) -> None:
        """Forget every scope; the next lookup rebuilds from the store."""
        with self._lock:
            self._indexes.clear()
            self._watermarks.clear()
