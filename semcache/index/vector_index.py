"""The vector index: one FAISS inner-product index per scope, derived from the store.

One index per scope makes the scope a pre-filter: a search only ever sees vectors of requests that
agree on everything but their text, so a nearest neighbour from another schema, model or system
prompt cannot win (a post-filter on a global top-1 would instead turn into a miss, or worse).

Vector ids are the store's entry ids, which SQLite never reuses (AUTOINCREMENT). An id whose entry
was deleted (here or by another process) therefore never points at a different entry: the store
simply has no row for it, and the cache drops it from the index.

Vectors are L2-normalized, so the inner product is the cosine similarity, in [-1, 1].

Index choice by size: exact (flat) search while a scope is small; past ``HNSW_AT`` vectors the
scope is rebuilt once as an HNSW graph (M=48; efSearch 128, 256 from 500k vectors), whose search
cost grows with log(n) instead of n. HNSW cannot delete, so deleted ids become tombstones filtered
from results, and the scope is rebuilt from the store when tombstones pass a tenth of it.

Stored vectors (``vectors=``): ``"float32"``, ``"fp16"`` or ``"sq8"``, compressed only in what
proposes candidates (the cache re-scores each from the store); ``semcache.index.stages`` makes
the FAISS index of each stage and choice.

Persistence: a scope of at least ``PERSIST_AT`` vectors is saved (``save``) beside the database as
one file ``<scope>.faiss``, and ``load`` uses it only when intact and made with this index's
settings (``semcache.index.saved_files`` writes and checks it).

Prebuilt snapshots (a fleet on PostgreSQL): the same file, written by ``export`` and installed by
``load_snapshot``, is how a scope travels through the database to a new node (``semcache.scopes``),
its watermark a position in the store's change feed; the ids removed since it was built (an HNSW
graph's tombstones) travel beside it, so the node that installs it and applies the feed from that
position holds what a fresh build would.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semcache.errors import UsageError
from semcache.index import file_format, stages
from semcache.index.saved_files import Found, Refusal, SavedFiles
from semcache.index.stages import VECTOR_KINDS, VectorKind

logger = logging.getLogger("semcache")

HNSW_AT = 20_000
PERSIST_AT = 5_000
# Measured on 1M synthetic-from-real MiniLM vectors (the data of benchmarks/scale.py, graphs
# built alone, 1,000 near-duplicate queries): M=32/efConstruction=64 left ~8% of stored vectors
# unreachable (near-duplicate recall@1 0.897; efSearch 2048 only reached 0.94);
# M=48/efConstruction=128 gives 0.985 at efSearch 128 and 0.993 at 256 (search 0.55 ms), built
# in 205 s on 2 cores; M=64/efConstruction=96 0.980 / 0.989.
HNSW_M = 48
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 128
HNSW_EF_SEARCH_LARGE = 256  # from HNSW_LARGE vectors on: recall, not speed, is what runs out
HNSW_LARGE = 500_000


@dataclass
class _Scope:
    index: Any
    kind: str  # "flat" or "hnsw"
    watermark: int = 0
    tombstones: set[int] = field(default_factory=set)
    unsaved: int = 0  # vectors added since the last save (or load)


@dataclass(frozen=True)
class Exported:
    """A scope written by ``VectorIndex.export``: the file's header, the ids removed from the
    scope since its graph was built, and how many vectors it had gained since its last export."""

    meta: dict[str, Any]
    tombstones: list[int]
    unsaved: int


class VectorIndex:
    """Per-scope FAISS indexes with a high-water mark each, for catching up from the store."""

    def __init__(
        self,
        dimension: int,
        folder: Path | None = None,
        owner: str = "",
        *,
        vectors: VectorKind = "float32",
        embedder: str = "",
    ) -> None:
        if vectors not in VECTOR_KINDS:
            raise UsageError(f"vectors must be one of {', '.join(VECTOR_KINDS)}; got {vectors!r}")
        import faiss  # imported here: only semantic lookups need it

        # One query at a time is searched: OpenMP threads cost more than they save there
        # (measured on 2 shared cores, 1k entries: p50 0.67 ms with one thread, 7.6 ms with two).
        # The OpenMP thread count is process-wide and torch may share it, so it is set for each
        # search and restored after; SEMCACHE_FAISS_THREADS=0 leaves it alone.
        self._search_threads = int(os.environ.get("SEMCACHE_FAISS_THREADS", "1"))
        self._faiss: Any = faiss
        self.dimension = dimension
        self.vectors: VectorKind = vectors
        self.folder = folder
        self.owner = owner  # the database's id: a file saved for another database is refused
        self.embedder = embedder  # the embedder's name: a file built by another one is refused
        # Writes and checks the scopes' files, and reports one refused, once per scope.
        self.files = SavedFiles(faiss, dimension, vectors, owner, embedder)
        self._scopes: dict[str, _Scope] = {}
        self._lock = threading.Lock()

    def has(self, scope: str) -> bool:
        with self._lock:
            return scope in self._scopes

    def watermark(self, scope: str) -> int:
        """How far ``scope`` has read its store: the highest entry id added, or the cursor of
        the store's change feed (0 when the scope is not held)."""
        with self._lock:
            state = self._scopes.get(scope)
            return state.watermark if state else 0

    def add(
        self, scope: str, ids: np.ndarray, vectors: np.ndarray, *, cursor: int | None = None
    ) -> None:
        """Add vectors under their entry ids and advance the scope's watermark.

        Without ``cursor`` the watermark is the highest id added, and ids at or below it are
        skipped (a row read twice by two threads catching up is added once). With ``cursor`` (a
        position in a store's change feed, where ids arrive out of order) the caller adds each
        change once, and the watermark becomes ``cursor``; the scope exists even when empty.
        """
        if len(ids) == 0 and cursor is None:
            return
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dimension)
        if (
            len(ids) >= HNSW_AT
            and not self.has(scope)
            and self._publish(scope, ids, vectors, cursor)
        ):
            return
        with self._lock:
            state = self._scopes.get(scope)
            if state is None:
                state = self._scopes[scope] = _Scope(self._new_flat(), "flat")
            if cursor is None:
                fresh = ids > state.watermark
                if not fresh.any():
                    return
                if not fresh.all():
                    ids, vectors = ids[fresh], vectors[fresh]
            if len(ids) and state.kind == "flat" and state.index.ntotal + len(ids) >= HNSW_AT:
                self._to_hnsw(state, ids, vectors)  # straight in: no flat copy of a big batch
            elif len(ids):
                state.index.add_with_ids(vectors, ids)
                if state.kind == "hnsw":
                    _tune(self._faiss, state.index)
            state.watermark = int(ids.max()) if cursor is None else max(state.watermark, cursor)
            state.unsaved += len(ids)

    def _publish(
        self, scope: str, ids: np.ndarray, vectors: np.ndarray, cursor: int | None
    ) -> bool:
        """Build a new scope's HNSW graph outside the lock (minutes for a million vectors), so
        searches of other scopes go on meanwhile; False when another thread created the scope
        first (the caller then adds to it as usual)."""
        built = _Scope(self._new_flat(), "flat")
        self._to_hnsw(built, ids, vectors)
        built.watermark = int(ids.max()) if cursor is None else cursor
        built.unsaved = len(ids)
        with self._lock:
            if scope in self._scopes:
                return False
            self._scopes[scope] = built
        return True

    def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """The ``k`` nearest entries of ``scope`` as ``(entry id, cosine similarity)``, best first.

        With compressed vectors the order and the similarities are approximate (to about 1e-3
        for fp16, 1e-2 for sq8): callers that decide on the similarity re-score from the store.
        """
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
        """``"flat"`` or ``"hnsw"``; None for a scope not held."""
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
                    self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                    target = self.folder / f"{scope}.faiss"
                    self.files.write(target, state.index, state.kind, state.watermark)
                    state.unsaved = 0
                    written += 1
                except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: from FAISS
                    logger.warning("semcache: could not save the index of a scope: %s", exc)
        return written

    def load(self, scope: str) -> bool:
        """Load ``scope`` from its saved file when it is intact and made with this index's
        settings; False otherwise (with one warning per scope when the file is damaged)."""
        if self.folder is None or self.has(scope):
            return False
        found = self.files.read(self.folder / f"{scope}.faiss")
        if isinstance(found, Refusal):
            if found.why:
                self.files.refuse(scope, found.why, found.damaged)
            return False
        self._install(scope, found, found.watermark)
        return True

    def inspect(self, scope: str) -> str:
        """Why ``scope``'s saved file would not be loaded ("" when it would): the whole file is
        read and checked as ``load`` does, and nothing is kept. For ``semcache check``."""
        if self.folder is None:
            return "no index folder"
        found = self.files.read(self.folder / f"{scope}.faiss")
        if isinstance(found, Refusal):
            return found.why or "no saved file"
        return ""

    def export(self, scope: str, target: Path) -> Exported | None:
        """Write ``scope`` to ``target`` in the saved-file format, its watermark a change-feed
        cursor, for publishing as a prebuilt snapshot; None when the scope is not held or is
        due for a rebuild (a tenth of it tombstones). Holds the lock while writing, as ``save``
        does (searches of this process wait for the write, never for the upload that follows)."""
        with self._lock:
            state = self._scopes.get(scope)
            if state is None or len(state.tombstones) * 10 > state.index.ntotal:
                return None
            self.files.write(target, state.index, state.kind, state.watermark, cursor="feed")
            exported = Exported(
                file_format.peek(target) or {}, sorted(state.tombstones), state.unsaved
            )
            state.unsaved = 0
        return exported

    def unsaved(self, scope: str) -> int:
        """Vectors added to ``scope`` since it was last saved, exported or loaded."""
        with self._lock:
            state = self._scopes.get(scope)
            return state.unsaved if state else 0

    def saved(self, scope: str) -> None:
        """Count ``scope`` as saved now (another process published as much)."""
        with self._lock:
            state = self._scopes.get(scope)
            if state is not None:
                state.unsaved = 0

    def load_snapshot(
        self,
        scope: str,
        path: Path,
        watermark: int,
        tombstones: list[int],
        crc32: int | None = None,
    ) -> str:
        """Install ``scope`` from a downloaded snapshot file (written by ``export``) with the
        ids removed since it was built; "" when installed, else why it was refused (damaged:
        a warning, once per scope; other settings: a note). Its header must say it covers the
        feed up to ``watermark`` (the position its head row announces). ``crc32``: as computed
        while downloading (``file_format.Receiver``)."""
        found = self.files.read(path, crc32)
        if not isinstance(found, Refusal) and found.watermark != watermark:
            found = Refusal(f"covers feed position {found.watermark}, not {watermark}")
        if isinstance(found, Refusal):
            why = found.why or "is missing"
            self.files.refuse(scope, why, found.damaged, "prebuilt index in the database")
            return why
        self._install(scope, found, watermark, tombstones)
        return ""

    def _install(
        self, scope: str, found: Found, watermark: int, tombstones: list[int] | None = None
    ) -> None:
        """Hold a file's index as ``scope`` (unless another thread got the scope first)."""
        if found.kind == "hnsw":
            _tune(self._faiss, found.index)
        state = _Scope(found.index, found.kind, watermark, set(tombstones or ()))
        with self._lock:
            self._scopes.setdefault(scope, state)

    # -- internals ----------------------------------------------------------------------------

    def _new_flat(self) -> Any:
        return stages.new_flat(self._faiss, self.dimension, self.vectors)

    def _to_hnsw(self, state: _Scope, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Rebuild a flat scope that reaches ``HNSW_AT`` with ``vectors`` as an HNSW graph (under
        the lock, once per scope)."""
        faiss = self._faiss
        n = state.index.ntotal
        if n:
            old = state.index.index.reconstruct_n(0, n)  # decoded: fp16 loses ~1e-3, no more
            vectors = np.concatenate([old, vectors])
            ids = np.concatenate([faiss.vector_to_array(state.index.id_map), ids])
        index = stages.new_hnsw(
            faiss, self.dimension, self.vectors, ids, vectors,
            m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION,
        )  # fmt: skip
        _tune(faiss, index)
        state.index, state.kind, state.unsaved = index, "hnsw", n


def _tune(faiss: Any, index: Any) -> None:
    """Set an HNSW scope's search breadth for its size."""
    ef = HNSW_EF_SEARCH_LARGE if index.ntotal >= HNSW_LARGE else HNSW_EF_SEARCH
    faiss.downcast_index(index.index).hnsw.efSearch = ef
