"""``SemanticCache``: the two tiers over the store, the embedder and the index.

A lookup tries the exact tier first (one indexed SQLite read, nothing embedded), then embeds the
request's variable text and searches the FAISS index of the request's scope. A candidate at or above
the threshold is served only if its stored JSON still validates against the *current*
response_model; anything else is a miss. This module is the only one that knows all four building
blocks; the instructor wrappers and the direct API both go through ``plan``/``serve``/``save``, so the
lookup and store logic exists once for sync and async callers.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import time
import warnings
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from semcache.embedding import Embedder, resolve_embedder
from semcache.errors import SemcacheError, UncacheableRequestError, UsageError
from semcache.index import VectorIndex
from semcache.keys import KeyedRequest, TextFn, build_key
from semcache.models import CacheHit, CacheStats, StoredEntry, Tier
from semcache.serialization import attach, dump_completion, restore_completion
from semcache.store import NewEntry, Store

logger = logging.getLogger("semcache")

DEFAULT_THRESHOLD = 0.9
DEFAULT_NAMESPACE = "default"
_FLUSH_SECONDS = 1.0
_CANDIDATES = 4  # nearest neighbours examined, so one stale or invalid entry does not hide the next


@dataclass
class Plan:
    """One cacheable request, keyed once before the provider sees it."""

    keyed: KeyedRequest
    response_model: type[BaseModel]
    context: Mapping[str, Any] | None
    strict: bool
    threshold: float
    read: bool = True
    write: bool = True
    vector: np.ndarray | None = field(default=None, repr=False)
    embeddable: bool | None = None  # decided on the first semantic lookup


class SemanticCache:
    """A semantic response cache for structured LLM outputs, stored in one SQLite file.

    ``threshold`` is a cosine similarity in [-1, 1]: a semantic hit needs
    ``similarity >= threshold``. ``embedder`` is None for the bundled offline all-MiniLM-L6-v2, a
    sentence-transformers model name, a ``SentenceTransformer`` or any ``Embedder``. ``namespace``
    separates tenants sharing a file: entries of one namespace are never served to another.
    ``text_fn(messages, context)`` picks the text to embed (default: the last user message, or the
    rendered template variables); returning None makes a request exact-only.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        threshold: float = DEFAULT_THRESHOLD,
        embedder: Embedder | str | Any | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        text_fn: TextFn | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        self.threshold = _check_threshold(threshold)
        if not isinstance(namespace, str) or not namespace:
            raise UsageError("namespace must be a non-empty string")
        self.namespace = namespace
        self.text_fn = text_fn
        self.embedder = resolve_embedder(embedder)
        self._store = Store(path, busy_timeout=busy_timeout)
        try:
            self._store.check_settings({"embedder_name": self.embedder.name})
        except BaseException:
            self._store.close()
            raise
        self._index: VectorIndex | None = None
        self._index_lock = threading.Lock()
        self._pending_hits: dict[int, tuple[int, float]] = {}
        self._pending_counts: Counter[str] = Counter()
        self._pending_lock = threading.Lock()
        self._last_flush = time.monotonic()
        self._closed = False
        _OPEN.add(self)

    # -- public API ---------------------------------------------------------------------------

    def wrap(self, client: Any) -> Any:
        """Return ``client`` (an instructor client, sync or async) with its calls going through
        this cache; see ``semcache.integrations.instructor``."""
        from semcache.integrations.instructor import wrap

        return wrap(self, client)

    def lookup(
        self,
        messages: Sequence[Any],
        response_model: type[BaseModel],
        *,
        model: str | None = None,
        threshold: float | None = None,
        context: Mapping[str, Any] | None = None,
        strict: bool = True,
        provider: str = "openai",
        mode: str = "tool_call",
        **params: Any,
    ) -> CacheHit | None:
        """Look a request up without calling anything: a ``CacheHit`` or None.

        The defaults of ``provider`` and ``mode`` are those of ``instructor.from_openai``, so
        entries stored here are found by wrapped OpenAI clients and the other way round.
        """
        plan = self.plan(
            messages=messages,
            response_model=response_model,
            model=model,
            context=context,
            strict=strict,
            provider=provider,
            mode=mode,
            params=params,
            threshold=threshold,
        )
        return self.serve(plan) if plan is not None else None

    def store(
        self,
        messages: Sequence[Any],
        response_model: type[BaseModel],
        value: BaseModel,
        *,
        completion: Any = None,
        model: str | None = None,
        context: Mapping[str, Any] | None = None,
        strict: bool = True,
        provider: str = "openai",
        mode: str = "tool_call",
        **params: Any,
    ) -> int | None:
        """Store ``value`` (and the raw ``completion``) as the answer to a request.

        Returns the entry id, or None when the request or the value cannot be cached.
        """
        if not isinstance(value, response_model):
            raise UsageError(f"value is a {type(value).__name__}, not a {response_model.__name__}")
        plan = self.plan(
            messages=messages,
            response_model=response_model,
            model=model,
            context=context,
            strict=strict,
            provider=provider,
            mode=mode,
            params=params,
        )
        return self.save(plan, value, completion) if plan is not None else None

    def stats(self) -> CacheStats:
        """Totals for the whole file, across processes (pending counts are written first)."""
        self.flush()
        counters = self._store.counters()
        exact, semantic = counters.get("exact_hits", 0), counters.get("semantic_hits", 0)
        return CacheStats(
            entries=self._store.count(),
            exact_hits=exact,
            semantic_hits=semantic,
            misses=counters.get("misses", 0),
            calls_avoided=exact + semantic,
            tokens_avoided=counters.get("tokens_avoided", 0),
        )

    def __len__(self) -> int:
        return self._store.count()

    @property
    def db(self) -> Store:
        """The underlying store, for maintenance code (export, CLI) that works on rows."""
        return self._store

    def flush(self) -> None:
        """Write buffered hit counts to the file (done every second and on close anyway)."""
        with self._pending_lock:
            hits, counts = self._pending_hits, self._pending_counts
            self._pending_hits, self._pending_counts = {}, Counter()
            self._last_flush = time.monotonic()
        try:
            self._store.record(hits, counts)
        except (SemcacheError, OSError, _sqlite_error()) as exc:
            # Counts are bookkeeping: keep them for the next flush rather than fail a lookup.
            logger.debug("semcache: could not write hit counts yet: %s", exc)
            with self._pending_lock:
                for entry_id, (n, ts) in hits.items():
                    old_n, old_ts = self._pending_hits.get(entry_id, (0, 0.0))
                    self._pending_hits[entry_id] = (old_n + n, max(old_ts, ts))
                self._pending_counts.update(counts)

    def close(self) -> None:
        """Write pending counts and close the file; idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._store.close()
            _OPEN.discard(self)

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the shared lookup/store logic ------------------------------------------------------

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
    ) -> Plan | None:
        """Key a request; None when it cannot be cached (it then goes to the provider as is)."""
        if not (isinstance(response_model, type) and issubclass(response_model, BaseModel)):
            return None
        if not isinstance(messages, (list, tuple)):
            return None
        try:
            keyed = build_key(
                provider=provider,
                mode=mode,
                model=model,
                messages=messages,
                response_model=response_model,
                context=context,
                strict=strict,
                params=params,
                namespace=self.namespace,
                text_fn=self.text_fn,
            )
        except UncacheableRequestError as exc:
            logger.debug("semcache: request not cached: %s", exc)
            return None
        return Plan(
            keyed=keyed,
            response_model=response_model,
            context=context,
            strict=strict,
            threshold=self.threshold if threshold is None else _check_threshold(threshold),
            read=read,
            write=write,
        )

    def serve(self, plan: Plan) -> CacheHit | None:
        """Answer ``plan`` from the cache, or None. Never raises for an internal failure: a broken
        cache falls back to the provider with a warning."""
        if not plan.read:
            return None
        try:
            hit = self._serve(plan)
        except Exception as exc:
            logger.warning("semcache: lookup failed, calling the provider: %s", exc)
            hit = None
        self._count(hit)
        return hit

    def save(self, plan: Plan, value: BaseModel, completion: Any) -> int | None:
        """Store the provider's answer for ``plan``. Failures are logged, never raised."""
        if not plan.write:
            return None
        try:
            return self._save(plan, value, completion)
        except Exception as exc:
            logger.warning("semcache: could not store an answer: %s", exc)
            return None

    # -- internals ------------------------------------------------------------------------------

    def _serve(self, plan: Plan) -> CacheHit | None:
        keyed = plan.keyed
        entry = self._store.get_exact(keyed.exact_key)
        if entry is not None:
            hit = self._rehydrate(plan, entry, 1.0, "exact")
            if hit is not None:
                return hit
        if not self._embeddable(plan):
            return None
        vector = self._vector(plan)
        index = self._catch_up(keyed.scope)
        candidates = [
            (i, s) for i, s in index.search(keyed.scope, vector, _CANDIDATES) if s >= plan.threshold
        ]
        if not candidates:
            return None
        rows = self._store.get_many([i for i, _ in candidates])
        gone = [i for i, _ in candidates if i not in rows]
        if gone:  # deleted or replaced elsewhere: drop from this process's index
            index.remove(keyed.scope, gone)
        for entry_id, similarity in candidates:
            row = rows.get(entry_id)
            if row is None or row.scope != keyed.scope:
                continue
            hit = self._rehydrate(plan, row, min(similarity, 1.0), "semantic")
            if hit is not None:
                return hit
        return None

    def _save(self, plan: Plan, value: BaseModel, completion: Any) -> int | None:
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
        vector = self._vector(plan) if self._embeddable(plan) else None
        entry_id, replaced = self._store.put(
            NewEntry(
                exact_key=keyed.exact_key,
                scope=keyed.scope,
                namespace=keyed.namespace,
                model=keyed.model,
                schema_name=keyed.schema_name,
                prompt=keyed.text,
                request_json=keyed.request_json,
                response_json=response_json,
                raw_json=raw_json,
                usage_json=usage_json,
                total_tokens=total_tokens,
                embedding=vector,
            )
        )
        if replaced is not None and self._index is not None:
            self._index.remove(keyed.scope, [replaced])
        return entry_id

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
                    self._index = VectorIndex(dimension)
                index = self._index
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
            value=value,
            completion=completion,
            similarity=similarity,
            tier=tier,
            entry_id=entry.id,
            matched_prompt=entry.prompt,
        )
        attach(value, "_raw_response", completion)
        attach(value, "_semcache_hit", hit)
        return hit

    def _count(self, hit: CacheHit | None) -> None:
        now = time.time()
        with self._pending_lock:
            if hit is None:
                self._pending_counts["misses"] += 1
            else:
                self._pending_counts[f"{hit.tier}_hits"] += 1
                n, _ = self._pending_hits.get(hit.entry_id, (0, 0.0))
                self._pending_hits[hit.entry_id] = (n + 1, now)
                tokens = _tokens_of(hit.completion)
                self._pending_counts["tokens_avoided"] += tokens
            due = time.monotonic() - self._last_flush >= _FLUSH_SECONDS
        if due:
            self.flush()


def cache_hit(value: Any) -> CacheHit | None:
    """The ``CacheHit`` that produced ``value``, or None when it came from the provider."""
    hit = getattr(value, "_semcache_hit", None)
    return hit if isinstance(hit, CacheHit) else None


def _tokens_of(completion: Any) -> int:
    usage = getattr(completion, "usage", None)
    total = getattr(usage, "total_tokens", None)
    if isinstance(total, int):
        return total
    parts = [getattr(usage, name, 0) for name in ("input_tokens", "output_tokens")]
    return sum(p for p in parts if isinstance(p, int))


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise UsageError(f"threshold must be a number, got {type(threshold).__name__}")
    if math.isnan(threshold) or not -1.0 <= threshold <= 1.0:
        raise UsageError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    return float(threshold)


def _sqlite_error() -> type[Exception]:
    import sqlite3

    return sqlite3.Error


_OPEN: weakref.WeakSet[SemanticCache] = weakref.WeakSet()


@atexit.register
def _close_open_caches() -> None:
    """Write buffered hit counts of caches the program never closed."""
    for cache in list(_OPEN):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.suppress(Exception):
                cache.close()
