"""The vector index: one FAISS inner-product index per scope, derived from the store.

One index per scope makes the scope a pre-filter: a search only ever sees vectors of requests that
agree on everything but their text, so a nearest neighbour from another schema, model or system
prompt cannot win (a post-filter on a global top-1 would instead turn into a miss, or worse).

Vector ids are the store's entry ids, which SQLite never reuses (AUTOINCREMENT). An id whose entry
was deleted (here or by another process) therefore never points at a different entry: the store
simply has no row for it, and the cache drops it from the index.

Vectors are L2-normalized, so the inner product is the cosine similarity, in [-1, 1].

Index choice by size: exact (flat) search while a scope is small; past ``HNSW_AT`` vectors the
scope is rebuilt once as an HNSW graph (M=32, efSearch=128), whose search cost grows with log(n)
instead of n. HNSW cannot delete, so deleted ids become tombstones filtered from results, and the
scope is rebuilt from the store when tombstones pass a tenth of it.

Persistence: a scope of at least ``PERSIST_AT`` vectors is saved (``save``) beside the database as
one file ``<scope>.faiss``: a JSON header line (format, kind, dimension, count, watermark, size and
CRC-32 of the rest) followed by the serialized FAISS index, written to a temporary file and renamed,
so a reader sees a whole old file or a whole new one. ``load`` checks all of that and refuses a
damaged file (the caller then rebuilds from SQLite, and the next save replaces it); a valid file is
always safe to use because the store is caught up from its watermark and every search result is
checked against the store.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("semcache")

HNSW_AT = 20_000
PERSIST_AT = 5_000
HNSW_M = 32
HNSW_EF_SEARCH = 128
HNSW_EF_CONSTRUCTION = 64
_FORMAT = 1


@dataclass
class _Scope:
    index: Any
    kind: str  # "flat" or "hnsw"
    watermark: int = 0
    tombstones: set[int] = field(default_factory=set)
    unsaved: int = 0  # vectors added since the last save (or load)


class VectorIndex:
    """Per-scope FAISS indexes with a high-water mark each, for catching up from the store."""

    def __init__(self, dimension: int, folder: Path | None = None, owner: str = "") -> None:
        import faiss  # imported here: only semantic lookups need it

        # One query at a time is searched: OpenMP threads cost more than they save there
        # (measured on 2 shared cores, 1k entries: p50 0.67 ms with one thread, 7.6 ms with two).
        # The OpenMP thread count is process-wide and torch may share it, so it is set for each
        # search and restored after; SEMCACHE_FAISS_THREADS=0 leaves it alone.
        self._search_threads = int(os.environ.get("SEMCACHE_FAISS_THREADS", "1"))
        self._faiss: Any = faiss
        self.dimension = dimension
        self.folder = folder
        self.owner = owner  # the database's id: a file saved for another database is refused
        self._scopes: dict[str, _Scope] = {}
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    def has(self, scope: str) -> bool:
        with self._lock:
            return scope in self._scopes

    def watermark(self, scope: str) -> int:
        """The highest entry id of ``scope`` already read from the store (0 when none)."""
        with self._lock:
            state = self._scopes.get(scope)
            return state.watermark if state else 0

    def add(self, scope: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under their entry ids and advance the scope's watermark."""
        if len(ids) == 0:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dimension)
        with self._lock:
            state = self._scopes.get(scope)
            if state is None:
                state = self._scopes[scope] = _Scope(self._new_flat(), "flat")
            fresh = (
                ids > state.watermark
            )  # a row read twice (two threads catching up) is added once
            if not fresh.any():
                return
            state.index.add_with_ids(vectors[fresh], ids[fresh])
            state.watermark = int(ids[fresh].max())
            state.unsaved += int(fresh.sum())
            if state.kind == "flat" and state.index.ntotal >= HNSW_AT:
                self._to_hnsw(scope, state)

    def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest entries of ``scope`` as ``(entry id, cosine similarity)``, best first."""
        with self._lock:
            state = self._scopes.get(scope)
            if state is None or state.index.ntotal == 0:
                return []
            query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, self.dimension)
            wanted = min(k + len(state.tombstones), state.index.ntotal)
            threads = self._search_threads
            if threads > 0:
                before = self._faiss.omp_get_max_threads()
                self._faiss.omp_set_num_threads(threads)
            try:
                sims, ids = state.index.search(query, wanted)
            finally:
                if threads > 0:
                    self._faiss.omp_set_num_threads(before)
            dead = state.tombstones
        found = [(int(i), float(s)) for i, s in zip(ids[0], sims[0], strict=True) if i >= 0]
        return [(i, s) for i, s in found if i not in dead][:k]

    def remove(self, scope: str, ids: list[int]) -> bool:
        """Drop entries that no longer exist in the store.

        Returns True when the scope has so many tombstones that it should be rebuilt (the caller
        then calls ``drop`` and catches up from the store).
        """
        with self._lock:
            state = self._scopes.get(scope)
            if state is None or not ids:
                return False
            if state.kind == "flat":
                state.index.remove_ids(np.asarray(ids, dtype=np.int64))
                return False
            state.tombstones.update(ids)
            return bool(len(state.tombstones) * 10 > state.index.ntotal)

    def drop(self, scope: str) -> None:
        """Forget one scope; the next lookup rebuilds it from the store."""
        with self._lock:
            self._scopes.pop(scope, None)

    def size(self, scope: str | None = None) -> int:
        """Vectors held for one scope, or for all of them (tombstones included)."""
        with self._lock:
            if scope is not None:
                state = self._scopes.get(scope)
                return int(state.index.ntotal) if state else 0
            return sum(int(s.index.ntotal) for s in self._scopes.values())

    def kind(self, scope: str) -> str | None:
        with self._lock:
            state = self._scopes.get(scope)
            return state.kind if state else None

    # -- persistence ------------------------------------------------------------------------

    def save(self, *, min_unsaved: int = 1) -> int:
        """Write every scope of ``PERSIST_AT`` vectors or more that changed by ``min_unsaved``.

        Returns how many scopes were written. Tombstoned scopes are not saved (they will be
        rebuilt); a failure to write is logged, never raised: the file is only an accelerator.
        """
        if self.folder is None:
            return 0
        written = 0
        with self._lock:
            todo = [
                (scope, state)
                for scope, state in self._scopes.items()
                if state.index.ntotal >= PERSIST_AT
                and state.unsaved >= min_unsaved
                and not state.tombstones
            ]
            for scope, state in todo:
                try:
                    self._write(scope, state)
                    state.unsaved = 0
                    written += 1
                except OSError as exc:
                    logger.warning("semcache: could not save the index of a scope: %s", exc)
        return written

    def load(self, scope: str) -> bool:
        """Load ``scope`` from its saved file when it is intact; False (and one warning when the
        file exists but is damaged) otherwise."""
        if self.folder is None or self.has(scope):
            return False
        path = self.folder / f"{scope}.faiss"
        if not path.exists():
            return False
        try:
            raw = path.read_bytes()
            head, _, data = raw.partition(b"\n")
            meta = json.loads(head)
            if (
                meta.get("format") != _FORMAT
                or meta.get("dimension") != self.dimension
                or meta.get("owner") != self.owner
                or meta.get("bytes") != len(data)
                or meta.get("crc32") != zlib.crc32(data)
            ):
                raise ValueError("size, checksum, format, database or dimension do not match")
            index = self._faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
            ids = self._faiss.vector_to_array(index.id_map)
            watermark = int(meta["watermark"])
            if index.ntotal != meta["count"] or index.d != self.dimension:
                raise ValueError("vector count or dimension do not match")
            if len(ids) and (int(ids.max()) > watermark or int(ids.min()) < 1):
                raise ValueError("vector ids out of range")
            if meta["kind"] == "hnsw":
                self._faiss.downcast_index(index.index).hnsw.efSearch = HNSW_EF_SEARCH
        except Exception as exc:  # any damage means: rebuild from the store
            if scope not in self._reported:
                self._reported.add(scope)
                logger.warning(
                    "semcache: saved index of scope %s is damaged (%s); rebuilt from the store",
                    scope[:12], exc,
                )  # fmt: skip
            return False
        with self._lock:
            self._scopes.setdefault(scope, _Scope(index, str(meta["kind"]), watermark))
        return True

    # -- internals ----------------------------------------------------------------------------

    def _new_flat(self) -> Any:
        return self._faiss.IndexIDMap2(self._faiss.IndexFlatIP(self.dimension))

    def _to_hnsw(self, scope: str, state: _Scope) -> None:
        """Rebuild a grown flat scope as an HNSW graph (under the lock, once per scope)."""
        faiss = self._faiss
        n = state.index.ntotal
        vectors = state.index.index.reconstruct_n(0, n)
        ids = faiss.vector_to_array(state.index.id_map).astype(np.int64)
        graph = faiss.IndexHNSWFlat(self.dimension, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        graph.hnsw.efSearch = HNSW_EF_SEARCH
        index = faiss.IndexIDMap2(graph)
        index.add_with_ids(vectors, ids)
        state.index, state.kind, state.unsaved = index, "hnsw", n

    def _write(self, scope: str, state: _Scope) -> None:
        assert self.folder is not None
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = self._faiss.serialize_index(state.index).tobytes()
        meta = {
            "format": _FORMAT,
            "kind": state.kind,
            "dimension": self.dimension,
            "owner": self.owner,
            "count": int(state.index.ntotal),
            "watermark": state.watermark,
            "bytes": len(data),
            "crc32": zlib.crc32(data),
        }
        target = self.folder / f"{scope}.faiss"
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(json.dumps(meta).encode() + b"\n")
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
