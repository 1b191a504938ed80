"""The lookup pipeline: one lookup and one store, written once for every caller.

``SemanticCache`` (``semcache.cache``) is the public face; it builds one ``Pipeline`` and hands it
the store, the embedder and the verifier. The instructor wrappers (sync and async), ``memoize``, the
direct API and bulk loading all go through ``plan``/``serve``/``save`` here. This is the only
place that combines the store, the embedder, the index and the verifier.

A lookup tries the exact tier first (one indexed read, nothing embedded), then embeds the request's
variable text and asks the FAISS index of the request's scope for its nearest entries (or, with
``search="pgvector"``, the database: ``_nearest`` is the one place that differs). Those are only
proposals: which of them, if any, is served is the semantic tier's decision
(``semcache.semantic``), from the similarity to the float32 vector in storage, the verifier,
feedback and the stored answer itself. Which threshold applies, the near-miss labels a miss
leaves and the periodic jobs are ``semcache.upkeep``'s. What stays here surrounds them: keying a
request, counting and reporting lookups, falling back to the provider on any failure, and the
write path.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from semcache import calibration, lifecycle
from semcache.embedding.base import Embedder
from semcache.embedding.resolve import default_threshold
from semcache.errors import StoreUnavailableError, UncacheableRequestError, UsageError
from semcache.events import (
    ErrorEvent,
    EventBus,
    EvictEvent,
    HitEvent,
    LookupEvent,
    MissEvent,
    StoreEvent,
)
from semcache.index.vector_index import VectorIndex
from semcache.keys import build_key
from semcache.requests import Plan, entry_for, rehydrate
from semcache.scopes import Scopes
from semcache.semantic import SemanticTier
from semcache.settings import Settings
from semcache.shadow import Shadow
from semcache.storage.base import NewEntry, Store, VectorSearch
from semcache.storage.ledger import Ledger
from semcache.storage.sqlite import SQLiteStore
from semcache.types import CacheHit
from semcache.upkeep import Upkeep
from semcache.verifiers.base import Verifier

logger = logging.getLogger("semcache")

_CANDIDATES = 4  # nearest neighbours examined, so one stale or vetoed entry does not hide the next


def _failed(what: str, exc: Exception) -> None:
    """Log a failed lookup or store; a database outage was already logged once by the store."""
    quiet = isinstance(exc, StoreUnavailableError)
    logger.log(logging.DEBUG if quiet else logging.WARNING, "semcache: %s: %s", what, exc)


class Front(Protocol):
    """What integrations and maintenance need of a cache (``SemanticCache``): its pipeline, and
    the SQLite file it stores in. Typed here so that they never import the facade."""

    @property
    def pipeline(self) -> Pipeline: ...

    @property
    def db(self) -> SQLiteStore: ...


class Pipeline:
    """Lookups and stores over one store, one embedder, one verifier and the derived index."""

    def __init__(
        self,
        store: Store,
        embedder: Embedder,
        verifier: Verifier,
        settings: Settings,
        *,
        shadow: Shadow,
        events: EventBus | None = None,
        disabled: str | None = None,
    ) -> None:
        self.store = store
        self.embedder = embedder
        # The threshold lookups fall back to when none is persisted: the caller's, else the
        # embedding model's own default (each model puts a pair at its own similarity).
        self.threshold: float = (
            default_threshold(embedder.name) if settings.threshold is None else settings.threshold
        )
        self.settings = dataclasses.replace(settings, threshold=self.threshold)
        self.shadow = shadow
        self.events = events if events is not None else EventBus()
        self.disabled = disabled  # why the cache is off (fail_open on a broken file)
        # The store that proposes candidates itself (search="pgvector"); None: the local index.
        self._searcher: VectorSearch | None = None
        if settings.search == "pgvector" and not disabled:
            if not isinstance(store, VectorSearch):
                raise UsageError("search='pgvector' needs a store that searches its own vectors")
            self._searcher = store
        self.ledger = Ledger(store)
        self.scopes = Scopes(store, settings.index_vectors)  # the derived FAISS index
        self.upkeep = Upkeep(
            store, self.ledger, self.scopes, self.settings, self._evicted, threshold=self.threshold
        )
        self.semantic = SemanticTier(
            store, verifier, self.settings, ledger=self.ledger, scopes=self.scopes,
            near_misses=self.upkeep.near_misses, events=self.events,
        )  # fmt: skip

    @property
    def verifier(self) -> Verifier:
        """The verifier the semantic tier asks (near-miss labels are judged by it too)."""
        return self.semantic.verifier

    @property
    def thresholds(self) -> dict[str, float]:
        """The persisted thresholds, as read within the last second."""
        return self.upkeep.thresholds

    @thresholds.setter
    def thresholds(self, value: dict[str, float]) -> None:
        self.upkeep.thresholds = value

    def plan(
        self,
        *,
        messages: Sequence[Any],
        response_model: Any,
        model: str | None,
        context: Mapping[str, Any] | None,
        strict: bool,
        provider: str,
        mode: str,
        params: Mapping[str, Any],
        threshold: float | None = None,
        read: bool = True,
        write: bool = True,
        ttl: float | None = None,
    ) -> Plan | None:
        """Key a request; None when it cannot be cached (it then goes to the provider as is)."""
        if not (isinstance(response_model, type) and issubclass(response_model, BaseModel)):
            return None
        if not isinstance(messages, (list, tuple)):
            return None
        try:
            keyed = build_key(
                provider=provider, mode=mode, model=model, messages=messages,
                response_model=response_model, context=context, strict=strict, params=params,
                namespace=self.settings.namespace, text_fn=self.settings.text_fn,
            )  # fmt: skip
        except UncacheableRequestError as exc:
            logger.debug("semcache: request not cached: %s", exc)
            return None
        return Plan(
            keyed=keyed, response_model=response_model, context=context, strict=strict,
            threshold=None if threshold is None else lifecycle.check_threshold(threshold),
            read=read, write=write, ttl=lifecycle.check_ttl(ttl),
        )  # fmt: skip

    def serve(self, plan: Plan) -> CacheHit | None:
        """Answer ``plan`` from the cache, or None. Never raises for an internal failure: a broken
        cache falls back to the provider with a warning."""
        if not plan.read or self.disabled:
            return None
        start = time.perf_counter()
        try:
            hit = self._lookup(plan)
        except Exception as exc:
            _failed("lookup failed, calling the provider", exc)
            self._emit(ErrorEvent(plan.keyed.namespace, plan.keyed.scope, "lookup", str(exc)))
            hit = None
        latency_ms = (time.perf_counter() - start) * 1000.0
        keyed = plan.keyed
        if hit is None:
            self.ledger.count("misses")
        else:
            self.ledger.count(f"{hit.tier}_hits")
            self.ledger.hit(hit.entry_id, hit.tokens)
        if self.events.active:
            self._emit(LookupEvent(
                keyed.namespace, keyed.scope, hit.tier if hit else None,
                hit.similarity if hit else None, latency_ms, hit.entry_id if hit else None,
            ))  # fmt: skip
            if hit is None:
                self._emit(MissEvent(keyed.namespace, keyed.scope, keyed.text))
            else:
                self._emit(HitEvent(
                    keyed.namespace, keyed.scope, hit.tier, hit.similarity, hit.entry_id,
                    keyed.text, hit.matched_prompt,
                ))  # fmt: skip
        if self.ledger.due():
            self._maintain()
        return hit

    def save(self, plan: Plan, value: BaseModel, completion: Any) -> int | None:
        """Store the provider's answer for ``plan``. Failures are logged, never raised."""
        if not plan.write or self.disabled:
            return None
        try:
            return self._save(plan, value, completion)
        except Exception as exc:
            _failed("could not store an answer", exc)
            self._emit(ErrorEvent(plan.keyed.namespace, plan.keyed.scope, "store", str(exc)))
            return None

    def record_shadow(self, hit: CacheHit, fresh: BaseModel) -> bool:
        """Compare a semantic hit with the provider's fresh answer; True when they agree."""
        agree, tightened = self.shadow.record(hit, fresh)
        self.upkeep.labelled()
        if tightened is not None:
            self.upkeep.refresh()
        return agree

    def close(self) -> None:
        """Write pending bookkeeping and save large scopes' indexes (the store stays open)."""
        self.flush()
        self.scopes.save()

    def flush(self) -> None:
        """Write buffered hit counts, vetoes, audit rows and near-miss labels (done every second
        anyway)."""
        self.upkeep.flush_labels(self.verifier)
        self.ledger.flush()

    def tune(self, *, apply: bool, source: str = "auto") -> list[calibration.Calibration]:
        """Calibrate every scope on its live labels (``semcache.calibration``); with ``apply``,
        persist the new thresholds, each logged with its evidence."""
        self.flush()
        return self.upkeep.tune(apply=apply, source=source)

    def _lookup(self, plan: Plan) -> CacheHit | None:
        keyed, now = plan.keyed, time.time()
        entry = self.store.get_exact(keyed.exact_key, now)
        if entry is not None:
            hit = rehydrate(plan, entry, 1.0, "exact")
            if hit is not None:
                return hit
        if not self._embeddable(plan):
            return None
        start = time.perf_counter()
        vector = self._vector(plan)
        threshold = self.upkeep.threshold_for(plan)
        # The index only proposes the nearest candidates; it does not filter them by threshold.
        # Its score can differ from the stored vector's similarity in the last bits (and more
        # with fp16/sq8), and a candidate it dropped at the boundary could then never be served
        # at a threshold equal to the similarity a hit reports.
        found = self._nearest(keyed.scope, vector, now)
        return self.semantic.choose(plan, vector, threshold, found, now, start)

    def _save(self, plan: Plan, value: BaseModel, completion: Any) -> int | None:
        vector = self._vector(plan) if self._embeddable(plan) else None
        entry = entry_for(plan, value, completion, vector, self.settings.ttl)
        if entry is None:
            return None
        return self._write([(plan, entry)])[0]

    def save_many(self, batch: list[tuple[Plan, BaseModel, Any]]) -> list[int | None]:
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
            entry = entry_for(plan, value, completion, vector, self.settings.ttl)
            positions.append(None if entry is None else len(entries))
            if entry is not None:
                entries.append((plan, entry))
        ids = self._write(entries) if entries else []
        return [None if at is None else ids[at] for at in positions]

    def _write(self, entries: list[tuple[Plan, NewEntry]]) -> list[int]:
        """Write rows in one transaction, then retire what they replaced and apply the size bound."""
        first = next((e.embedding for _, e in entries if e.embedding is not None), None)
        if first is not None:
            self.scopes.record_dimension(len(first))
        written = self.store.put_many([entry for _, entry in entries])
        for (plan, entry), (entry_id, replaced) in zip(entries, written, strict=True):
            self.upkeep.near_misses.answered(entry.exact_key, entry.response_json)
            scope = entry.scope
            if replaced is not None:
                self.scopes.forget(scope, [replaced])
            self._emit(StoreEvent(plan.keyed.namespace, scope, entry_id, replaced))
        if self.settings.max_entries is not None:
            self.flush()  # eviction is by last hit: write pending hit times first
            self._evicted(self.store.evict_lru(self.settings.max_entries), "size")
        return [entry_id for entry_id, _ in written]

    def _maintain(self) -> None:
        """Periodic work off the hot path: write bookkeeping, then the jobs of ``Upkeep.run``."""
        self.flush()
        self.upkeep.run()

    def _evicted(self, gone: list[tuple[int, str]], reason: str) -> None:
        by_scope: dict[str, list[int]] = {}
        for entry_id, scope in gone:
            by_scope.setdefault(scope, []).append(entry_id)
        for scope, ids in by_scope.items():
            self.scopes.forget(scope, ids)
            self._emit(EvictEvent(self.settings.namespace, scope, tuple(ids), reason))

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

    def _nearest(self, scope: str, vector: np.ndarray, now: float) -> list[tuple[int, float]]:
        """A lookup's candidates, ``(entry id, similarity)`` best first: proposed by the scope's
        FAISS index in this process, caught up with the store first, or by the store itself
        when the cache searches in the database (``search="pgvector"``). Either way they are
        only proposals, re-checked against the store by ``_lookup``."""
        if self._searcher is not None:
            self.scopes.record_dimension(len(vector))  # as the local index's first catch-up
            return self._searcher.nearest(scope, vector, _CANDIDATES, now)
        return self.catch_up(scope).search(scope, vector, _CANDIDATES)

    def catch_up(self, scope: str) -> VectorIndex:
        """The index, with every entry of ``scope`` committed so far (by any process) added."""
        return self.scopes.catch_up(scope, self.embedder)

    def _emit(self, event: Any) -> None:
        self.events.emit(event)
