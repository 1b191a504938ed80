"""The lookup pipeline behind ``SemanticCache``: exact tier, scoped search, verification,
rehydration, storing, and the periodic maintenance that keeps the file tidy.

``SemanticCache`` (``semcache.cache``) is the public face: arguments, the direct API, statistics
and lifecycle. This module holds what happens inside one lookup or one store, written once for
the sync and async wrappers, which both go through ``SemanticCache.plan``/``serve``/``save``.
It is the only place that combines the store, the embedder, the index and the verifier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from semcache import index_file, lifecycle
from semcache.embedding import Embedder
from semcache.events import EventBus, EvictEvent, StoreEvent, VetoEvent
from semcache.index import VectorIndex, VectorKind
from semcache.keys import KeyedRequest
from semcache.ledger import Ledger
from semcache.models import CacheHit, StoredEntry, Tier
from semcache.serialization import attach, dump_completion, restore_completion
from semcache.store import NewEntry, Store
from semcache.verify import Verdict, Verifier

logger = logging.getLogger("semcache")

# A query this close to one a hit was marked wrong for is treated as the same query.
FEEDBACK_RADIUS = 0.95
_CANDIDATES = 4  # nearest neighbours examined, so one stale or vetoed entry does not hide the next
_SAVE_AFTER = 50_000  # vectors added to a scope before maintenance saves its index again


@dataclass
class Plan:
    """One cacheable request, keyed once before the provider sees it."""

    keyed: KeyedRequest
    response_model: type[BaseModel]
    context: Mapping[str, Any] | None
    strict: bool
    threshold: float | None = None  # a per-call override
    read: bool = True
    write: bool = True
    ttl: float | None = None
    vector: np.ndarray | None = field(default=None, repr=False)
    embeddable: bool | None = None  # decided on the first semantic lookup


class Engine:
    """The internals of a ``SemanticCache``; its attributes are set by ``SemanticCache``."""

    threshold: float
    index_vectors: VectorKind
    namespace: str
    ttl: float | None
    max_entries: int | None
    audit: bool
    audit_retention: float
    audit_max_rows: int
    embedder: Embedder
    verifier: Verifier
    events: EventBus
    _store: Store
    _ledger: Ledger
    _maintenance: lifecycle.Maintenance
    _thresholds: dict[str, float]
    _index: VectorIndex | None
    _index_lock: threading.Lock
    _dimension_recorded: bool

    def flush(self) -> None:
        """Write buffered hit counts, vetoes and audit rows (done every second anyway)."""
        self._ledger.flush()

    def _serve(self, plan: Plan) -> CacheHit | None:
        keyed, now = plan.keyed, time.time()
        entry = self._store.get_exact(keyed.exact_key, now)
        if entry is not None:
            hit = self._rehydrate(plan, entry, 1.0, "exact")
            if hit is not None:
                return hit
        if not self._embeddable(plan):
            return None
        start = time.perf_counter()
        vector = self._vector(plan)
        index = self._catch_up(keyed.scope)
        threshold = self._threshold_for(plan)
        found = index.search(keyed.scope, vector, _CANDIDATES)
        candidates = [(i, s) for i, s in found if s >= threshold]
        rows = self._store.get_many([i for i, _ in candidates], now)
        gone = [i for i, _ in candidates if i not in rows]
        if gone and index.remove(keyed.scope, gone):  # deleted, expired or replaced elsewhere
            index.drop(keyed.scope)  # too many tombstones: rebuild from the store next time
        wrong_for = self._store.wrong_queries(list(rows), index.dimension)
        verdict: Verdict | None = None
        # The similarity that decides is recomputed from the store's own vector: the index only
        # proposes candidates, so even a damaged index cannot make a wrong hit. Candidates are
        # tried best first by that similarity (a compressed index may order them slightly off).
        scored = sorted(
            (
                (_similarity(row.embedding, vector), row)
                for row in (rows.get(entry_id) for entry_id, _ in candidates)
                if row is not None and row.scope == keyed.scope and row.prompt is not None
            ),
            key=lambda pair: -pair[0],
        )
        for similarity, row in scored:
            if similarity < threshold:
                continue
            verdict = self._verify(plan, row, similarity, vector, wrong_for.get(row.id), start)
            if not verdict.accept:
                continue
            hit = self._rehydrate(plan, row, min(similarity, 1.0), "semantic")
            if hit is not None:
                self._audit(plan, start, row, similarity, "hit", "")
                return hit
        best = found[0] if found else None
        if verdict is None:
            self._audit(plan, start, None, best[1] if best else None, "below_threshold", "")
        return None

    def _verify(
        self,
        plan: Plan,
        row: StoredEntry,
        similarity: float,
        vector: np.ndarray,
        wrong_for: np.ndarray | None,
        start: float,
    ) -> Verdict:
        """Feedback first (a hit marked wrong for a near-duplicate query), then the verifier."""
        query = plan.keyed.text or ""
        assert row.prompt is not None
        if wrong_for is not None and float((wrong_for @ vector).max()) >= FEEDBACK_RADIUS:
            verdict = Verdict(False, "marked wrong for a near-duplicate query", "feedback")
        else:
            verdict = self.verifier.verify(query, row.prompt, similarity)
        if not verdict.accept:
            stage = verdict.stage or self.verifier.name
            scope = plan.keyed.scope
            self._ledger.row("vetoes", (
                time.time(), scope, row.id, query, row.prompt, similarity, stage, verdict.reason,
            ))  # fmt: skip
            self._audit(plan, start, row, similarity, "veto", f"{stage}: {verdict.reason}")
            if self.events.active:
                self._emit(VetoEvent(
                    plan.keyed.namespace, scope, row.id, query, row.prompt, similarity, stage,
                    verdict.reason,
                ))  # fmt: skip
        return verdict

    def _save(self, plan: Plan, value: BaseModel, completion: Any) -> int | None:
        vector = self._vector(plan) if self._embeddable(plan) else None
        entry = self._entry(plan, value, completion, vector)
        if entry is None:
            return None
        return self._write([(plan, entry)])[0]

    def _save_many(self, batch: list[tuple[Plan, BaseModel, Any]]) -> list[int | None]:
        """``_save`` for a batch: one embedding call for all texts, one transaction for all rows."""
        todo = [plan for plan, _, _ in batch if plan.vector is None and self._embeddable(plan)]
        if todo:
            vectors = self.embedder.embed([plan.keyed.text or "" for plan in todo])
            for plan, vector in zip(todo, vectors, strict=True):
                plan.vector = vector
        entries: list[tuple[Plan, NewEntry]] = []
        positions: list[int | None] = []
        for plan, value, completion in batch:
            vector = plan.vector if self._embeddable(plan) else None
            entry = self._entry(plan, value, completion, vector)
            positions.append(None if entry is None else len(entries))
            if entry is not None:
                entries.append((plan, entry))
        ids = self._write(entries) if entries else []
        return [None if at is None else ids[at] for at in positions]

    def _entry(
        self, plan: Plan, value: BaseModel, completion: Any, vector: np.ndarray | None
    ) -> NewEntry | None:
        """The row for one answer; None when the answer does not survive a JSON round trip."""
        keyed, model_cls = plan.keyed, plan.response_model
        response_json = value.model_dump_json(by_alias=True)
        # Store only what rehydrates to the same object; anything else would be a wrong answer later.
        again = model_cls.model_validate_json(
            response_json, context=plan.context, strict=plan.strict
        )
        if again.model_dump() != value.model_dump():
            logger.debug("semcache: %s does not round-trip through JSON; not cached", model_cls)
            return None
        raw_json, usage_json, total_tokens = dump_completion(completion)
        ttl = plan.ttl if plan.ttl is not None else self.ttl
        return NewEntry(
            exact_key=keyed.exact_key, scope=keyed.scope, namespace=keyed.namespace,
            model=keyed.model, schema_name=keyed.schema_name, prompt=keyed.text,
            request_json=keyed.request_json, response_json=response_json, raw_json=raw_json,
            usage_json=usage_json, total_tokens=total_tokens, embedding=vector,
            expires_at=None if ttl is None else time.time() + ttl,
        )  # fmt: skip

    def _write(self, entries: list[tuple[Plan, NewEntry]]) -> list[int]:
        """Write rows in one transaction, then retire what they replaced and apply the size bound."""
        first = next((e.embedding for _, e in entries if e.embedding is not None), None)
        if first is not None and not self._dimension_recorded:
            # Recorded with the first vector, so tools reading the file know the width.
            self._store.check_settings({"embedder_dimension": str(len(first))})
            self._dimension_recorded = True
        written = self._store.put_many([entry for _, entry in entries])
        index = self._index
        for (plan, entry), (entry_id, replaced) in zip(entries, written, strict=True):
            scope = entry.scope
            if replaced is not None and index is not None and index.remove(scope, [replaced]):
                index.drop(scope)
            self._emit(StoreEvent(plan.keyed.namespace, scope, entry_id, replaced))
        if self.max_entries is not None:
            self.flush()  # eviction is by last hit: write pending hit times first
            self._evicted(self._store.evict_lru(self.max_entries), "size")
        return [entry_id for entry_id, _ in written]

    def _maintain(self) -> None:
        """Periodic work off the hot path: write bookkeeping, reclaim expired entries, apply the
        audit log's retention, pick up thresholds another process set."""
        self.flush()
        try:
            if self._maintenance.due("expire"):
                self._evicted(self._store.evict_expired(time.time()), "ttl")
            if self.audit and self._maintenance.due("audit"):
                self._store.trim_audit(
                    older_than=time.time() - self.audit_retention, max_rows=self.audit_max_rows
                )
            self._thresholds = self._store.thresholds()
            if self._index is not None and self._maintenance.due("save_index"):
                self._index.save(min_unsaved=_SAVE_AFTER)
        except Exception as exc:
            logger.debug("semcache: maintenance postponed: %s", exc)

    def _evicted(self, gone: list[tuple[int, str]], reason: str) -> None:
        by_scope: dict[str, list[int]] = {}
        for entry_id, scope in gone:
            by_scope.setdefault(scope, []).append(entry_id)
        for scope, ids in by_scope.items():
            if self._index is not None and self._index.remove(scope, ids):
                self._index.drop(scope)
            self._emit(EvictEvent(self.namespace, scope, tuple(ids), reason))

    def _threshold_for(self, plan: Plan) -> float:
        if plan.threshold is not None:
            return plan.threshold
        thresholds = self._thresholds
        for target in (f"scope:{plan.keyed.scope}", f"schema:{plan.keyed.schema_name}", "default"):
            if target in thresholds:
                return thresholds[target]
        return self.threshold

    def _index_folder(self) -> Path | None:
        """Where large scopes' indexes are saved: ``<database file>.index/`` (none in memory)."""
        path = self._store.path
        return None if path is None else index_file.folder_for(path)

    def _embeddable(self, plan: Plan) -> bool:
        """Whether the request may use the semantic tier: it has a text the model reads whole.

        all-MiniLM-L6-v2 reads 256 word pieces; two prompts that differ only after that embed
        identically (cosine 1.0), so a longer text is served by the exact tier only.
        """
        if plan.embeddable is None:
            text = plan.keyed.text
            plan.embeddable = text is not None and self.embedder.fits(text)
        return plan.embeddable

    def _vector(self, plan: Plan) -> np.ndarray:
        """The request's embedding, computed at most once per plan (lookup, then store)."""
        if plan.vector is None:
            assert plan.keyed.text is not None
            plan.vector = self.embedder.embed([plan.keyed.text])[0]
        return plan.vector

    def _catch_up(self, scope: str) -> VectorIndex:
        """The index, with every entry of ``scope`` committed so far (by any process) added."""
        index = self._index
        if index is None:
            with self._index_lock:
                if self._index is None:
                    dimension = self.embedder.dimension
                    self._store.check_settings({"embedder_dimension": str(dimension)})
                    self._index = VectorIndex(
                        dimension,
                        self._index_folder(),
                        self._store.settings().get("database_id", ""),
                        vectors=self.index_vectors,
                    )
                index = self._index
        if not index.has(scope):
            index.load(scope)  # a saved index spares rebuilding a large scope from SQLite
        ids, vectors = self._store.vectors_since(scope, index.watermark(scope), index.dimension)
        index.add(scope, ids, vectors)
        return index

    def _rehydrate(
        self, plan: Plan, entry: StoredEntry, similarity: float, tier: Tier
    ) -> CacheHit | None:
        """Validate a stored answer against the current model; None when it no longer validates."""
        try:
            value = plan.response_model.model_validate_json(
                entry.response_json, context=plan.context, strict=plan.strict
            )
        except Exception as exc:  # ValidationError, or a validator that raises something else
            logger.debug(
                "semcache: entry %s no longer validates, treated as a miss: %s", entry.id, exc
            )
            return None
        completion = restore_completion(entry.raw_json)
        hit = CacheHit(
            value=value, completion=completion, similarity=similarity, tier=tier,
            entry_id=entry.id, matched_prompt=entry.prompt, query=plan.keyed.text,
            scope=plan.keyed.scope, tokens=entry.total_tokens,
        )  # fmt: skip
        attach(value, "_raw_response", completion)
        attach(value, "_semcache_hit", hit)
        return hit

    def _audit(
        self,
        plan: Plan,
        start: float,
        row: StoredEntry | None,
        similarity: float | None,
        verdict: str,
        reason: str,
    ) -> None:
        if not self.audit:
            return
        latency_ms = (time.perf_counter() - start) * 1000.0
        keyed = plan.keyed
        self._ledger.row("audit", (
            time.time(), keyed.namespace, keyed.scope, keyed.text, row.id if row else None,
            row.prompt if row else None, similarity, verdict, reason, latency_ms,
        ))  # fmt: skip

    def _emit(self, event: Any) -> None:
        self.events.emit(event)


def _similarity(blob: bytes | None, vector: np.ndarray) -> float:
    """Cosine similarity of a stored float32 blob and a query vector (both unit length)."""
    if blob is None or len(blob) != vector.size * 4:
        return -2.0  # below any threshold: a missing or damaged vector never matches
    return min(1.0, float(np.frombuffer(blob, dtype="<f4") @ vector))
