"""``SemanticCache``: the public face of the cache — its arguments, the direct API, statistics,
thresholds, feedback and lifecycle. Each method documents and delegates; the work is elsewhere.

Its arguments are checked in ``semcache.settings`` and opened into a pipeline by
``semcache.opening``. A lookup and a store are ``semcache.pipeline``'s (which candidate is served,
``semcache.semantic``'s); the instructor wrappers and the direct API both go through
``plan``/``serve``/``save``, so the lookup and store logic exists once for sync and async.
Feedback and totals are ``semcache.feedback``'s, bulk loading ``semcache.bulk``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from pydantic import BaseModel

from semcache import bulk, calibration, feedback, lifecycle
from semcache.embedding.base import Embedder
from semcache.errors import UsageError
from semcache.events import EventBus
from semcache.index.stages import VectorKind
from semcache.integrations.instructor import (
    AsyncCachedInstructor,
    CachedClient,
    CachedInstructor,
    wrap_client,
)
from semcache.keys import TextFn
from semcache.opening import DEFAULT_VERIFIER, open_pipeline
from semcache.requests import Plan
from semcache.settings import (
    DEFAULT_NAMESPACE,
    DEFAULT_NEAR_MISS_BAND,
    DEFAULT_THRESHOLD,
    Settings,
    checked,
)
from semcache.shadow import Shadow
from semcache.storage import Location, Search, SQLiteStore
from semcache.types import CacheHit, CacheStats
from semcache.verifiers.agreement import DEFAULT_MARGIN
from semcache.verifiers.base import Verifier

if TYPE_CHECKING:
    from instructor import AsyncInstructor, Instructor

__all__ = ["DEFAULT_THRESHOLD", "SemanticCache"]

F = TypeVar("F", bound=Callable[..., Any])


class SemanticCache:
    """A semantic response cache for structured LLM outputs, stored in one SQLite file, or in a
    PostgreSQL database shared by many processes and machines (``"postgresql://user@host/db"``,
    or the application's ``psycopg_pool.ConnectionPool``, from which each call borrows a
    connection; ``close()`` leaves the pool open. An ``AsyncConnectionPool`` is refused with a
    ``UsageError``: the store is synchronous, the async wrapper runs it in threads, and async
    connections belong to their event loop; pass its conninfo URL instead. README, "Running a
    fleet").

    ``threshold`` is a cosine similarity in [-1, 1]: a semantic hit needs
    ``similarity >= threshold``; None is the embedding model's default (0.911 for the tuned model,
    0.87 for the bundled one and any other). ``embedder`` is None for the default, semcache's tuned
    copy of the bundled offline all-MiniLM-L6-v2 (an existing file keeps the model it was made
    with), ``"bundled"`` for the bundled model as shipped, a sentence-transformers model name, a
    ``SentenceTransformer`` or any ``Embedder``. ``verifier``
    vetoes candidates whose texts differ in meaning (None: no verification). ``namespace``
    separates tenants sharing a file. ``text_fn(messages, context)`` picks the text to embed.
    ``ttl`` (seconds) is the default lifetime of an entry; ``max_entries`` bounds the file, evicting
    the least recently used entries. ``audit=True`` records every semantic decision.
    ``fail_open=True`` turns a damaged file into a disabled cache (every call reaches the provider)
    instead of a ``StoreError`` on open. ``shadow_rate`` is the fraction of semantic hits the wrapped clients re-ask the provider in the
    background to measure precision; with ``shadow_target`` a scope confidently below that precision
    gets a higher threshold. ``index_vectors`` ("float32", "fp16" or "sq8") is how the FAISS index
    holds vectors in memory: compression saves memory on large scopes at a small cost in which
    candidates are proposed, never in the similarity that decides (always from the float32 vector
    in SQLite). ``search="pgvector"`` (a ``postgresql://`` cache on a server with pgvector)
    searches each lookup's candidates in the database instead of a FAISS replica in this process
    (README, "Running a fleet", says when to choose it). ``agreement_margin``: a semantic
    candidate is not served when another candidate at or above the threshold, at most this much
    less similar, holds a different answer (labels, numbers, ids and short strings are compared;
    prose is not); None serves the best accepted candidate regardless
    (``semcache.verifiers.agreement``). ``near_miss_band``: when a request misses and its nearest
    candidate lies this much or less below the threshold, the provider's answer is compared with
    the candidate's when it is stored, and the outcome kept as a label (``semcache.labels``;
    None: no labels). ``auto_tune=True`` moves each scope's threshold, up or down, to the lowest
    one whose precision on those labels, shadow checks and ``mark_wrong`` feedback reaches
    ``target_precision`` with 95% confidence (``semcache.calibration``).
    """

    def __init__(
        self,
        path: Location,
        *,
        threshold: float | None = None,
        embedder: Embedder | str | Any | None = None,
        verifier: Verifier | None = DEFAULT_VERIFIER,
        namespace: str = DEFAULT_NAMESPACE,
        text_fn: TextFn | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        audit: bool = False,
        audit_retention: float = 30 * 86400.0,
        audit_max_rows: int = 100_000,
        shadow_rate: float = 0.0,
        shadow_target: float | None = None,
        fail_open: bool = False,
        busy_timeout: float = 5.0,
        index_vectors: VectorKind = "float32",
        search: Search = "local",
        agreement_margin: float | None = DEFAULT_MARGIN,
        schema_evidence: bool = True,
        near_miss_band: float | None = DEFAULT_NEAR_MISS_BAND,
        auto_tune: bool = False,
        target_precision: float = calibration.DEFAULT_TARGET,
    ) -> None:
        settings = checked(Settings(
            threshold=threshold, namespace=namespace, text_fn=text_fn, ttl=ttl,
            max_entries=max_entries, audit=audit, audit_retention=audit_retention,
            audit_max_rows=audit_max_rows, index_vectors=index_vectors, search=search,
            agreement_margin=agreement_margin, schema_evidence=schema_evidence,
            near_miss_band=near_miss_band, auto_tune=auto_tune, target_precision=target_precision,
        ))  # fmt: skip
        self.pipeline = open_pipeline(
            path, settings, embedder=embedder, verifier=verifier, shadow_rate=shadow_rate,
            shadow_target=shadow_target, fail_open=fail_open, busy_timeout=busy_timeout,
        )  # fmt: skip
        self._store = self.pipeline.store
        self._closed = False
        lifecycle.track(self)

    # -- what the pipeline was built with -------------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The constructor's arguments that shape lookups and stores, checked."""
        return self.pipeline.settings

    @property
    def threshold(self) -> float:
        """The constructor's threshold, else the embedding model's default (persisted ones take
        precedence; see ``set_threshold``)."""
        return self.pipeline.threshold

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    @property
    def text_fn(self) -> TextFn | None:
        return self.settings.text_fn

    @property
    def ttl(self) -> float | None:
        return self.settings.ttl

    @property
    def max_entries(self) -> int | None:
        return self.settings.max_entries

    @property
    def audit(self) -> bool:
        return self.settings.audit

    @property
    def audit_retention(self) -> float:
        return self.settings.audit_retention

    @property
    def audit_max_rows(self) -> int:
        return self.settings.audit_max_rows

    @property
    def index_vectors(self) -> VectorKind:
        return self.settings.index_vectors

    @property
    def search(self) -> Search:
        """Where lookups search: ``"local"`` (FAISS in this process) or ``"pgvector"``."""
        return self.settings.search

    @property
    def embedder(self) -> Embedder:
        return self.pipeline.embedder

    @property
    def verifier(self) -> Verifier:
        return self.pipeline.verifier

    @property
    def events(self) -> EventBus:
        """Subscribe callbacks to lookups, hits, misses, vetoes, stores and evictions."""
        return self.pipeline.events

    @property
    def shadow(self) -> Shadow:
        return self.pipeline.shadow

    @property
    def disabled(self) -> str | None:
        """Why the cache is off (``fail_open=True`` on a broken file), or None."""
        return self.pipeline.disabled

    # -- public API ---------------------------------------------------------------------------

    @overload
    def wrap(self, client: AsyncInstructor) -> AsyncCachedInstructor: ...  # type: ignore[overload-overlap]

    @overload
    def wrap(self, client: Instructor) -> CachedInstructor: ...

    @overload
    def wrap(self, client: object) -> CachedClient: ...

    def wrap(self, client: Any) -> CachedClient:
        """Return ``client`` (an instructor client, sync or async) with its structured calls
        going through this cache; see ``semcache.integrations.instructor``. A type checker sees
        the same return types as the client's own ``create`` (``User`` for
        ``response_model=User``)."""
        wrapped: CachedClient = wrap_client(self, client)
        return wrapped

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
            messages=messages, response_model=response_model, model=model, context=context,
            strict=strict, provider=provider, mode=mode, params=params, threshold=threshold,
        )  # fmt: skip
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
        ttl: float | None = None,
        **params: Any,
    ) -> int | None:
        """Store ``value`` (and the raw ``completion``) as the answer to a request.

        Returns the entry id, or None when the request or the value cannot be cached.
        """
        if not isinstance(value, response_model):
            raise UsageError(f"value is a {type(value).__name__}, not a {response_model.__name__}")
        plan = self.plan(
            messages=messages, response_model=response_model, model=model, context=context,
            strict=strict, provider=provider, mode=mode, params=params, ttl=ttl,
        )  # fmt: skip
        return self.save(plan, value, completion) if plan is not None else None

    def store_many(
        self,
        items: Iterable[bulk.Item],
        response_model: type[BaseModel],
        *,
        model: str | None = None,
        context: Mapping[str, Any] | None = None,
        strict: bool = True,
        provider: str = "openai",
        mode: str = "tool_call",
        ttl: float | None = None,
        batch_size: int = 256,
        **params: Any,
    ) -> list[int | None]:
        """Store many answers at once, e.g. to warm a cache from logs or a labeled set.

        ``items`` holds ``(messages, value)`` or ``(messages, value, completion)`` tuples; the other
        arguments apply to every item, as in ``store``. Texts are embedded ``batch_size`` at a time
        and each batch is written in one transaction, which is what makes this much faster than
        ``store`` in a loop. Returns the entry ids in the order of ``items`` (None for a request or
        value that cannot be cached). Unlike the request path, a failure to write raises
        (``StoreError``, ``LockTimeoutError``): a batch is all or nothing, earlier batches stay.
        """
        return bulk.store_many(
            self.pipeline, items, response_model, model=model, context=context, strict=strict,
            provider=provider, mode=mode, ttl=ttl, batch_size=batch_size, params=params,
        )  # fmt: skip

    def stats(self) -> CacheStats:
        """Totals for the whole file, across processes (pending counts are written first)."""
        return feedback.stats(self.pipeline)

    def tune(self, *, apply: bool = False) -> list[calibration.Calibration]:
        """Each scope's calibration on its live labels, toward ``target_precision``: the curve,
        the current threshold and the one proposed (None: keep it). With ``apply=True`` the
        proposals are persisted and logged, as ``auto_tune`` does periodically."""
        return self.pipeline.tune(apply=apply, source="tune")

    def set_threshold(
        self,
        threshold: float | None,
        *,
        response_model: type[BaseModel] | None = None,
        scope: str | None = None,
        source: str = "user",
    ) -> None:
        """Persist a threshold for one response_model (by schema title) or one scope, or, with
        neither, the file's default. ``None`` removes it. Precedence at lookup: the call's
        ``semcache_threshold``, then the scope's, the response_model's, the file's, the
        constructor's."""
        feedback.set_threshold(
            self.pipeline, threshold, response_model=response_model, scope=scope, source=source
        )

    def thresholds(self) -> dict[str, float]:
        """The persisted thresholds by target (``scope:…``, ``schema:…`` or ``default``)."""
        return dict(self.pipeline.thresholds)

    def mark_wrong(self, hit: CacheHit, *, note: str = "") -> None:
        """Record that ``hit`` was a wrong answer. It is never served again for that query or a
        near-duplicate of it (cosine >= 0.95); an exact hit's entry is deleted outright."""
        feedback.mark_wrong(self.pipeline, hit, note)

    def memoize(
        self,
        *,
        text: str | Callable[..., Any],
        namespace: str | None = None,
        threshold: float | None = None,
    ) -> Callable[[F], F]:
        """Cache a function returning a Pydantic model through both tiers; ``text`` names the
        argument to embed (or is a function of some arguments). See ``semcache.integrations.memoize``."""
        from semcache.integrations.memoize import memoize

        return memoize(self, text=text, namespace=namespace, threshold=threshold)

    def export(self, folder: str | os.PathLike[str], **options: Any) -> Any:
        """Write a portable, self-describing folder; see ``semcache.ops.export.export`` (and
        ``semcache.ops.engines`` for a cache on PostgreSQL: the same folder)."""
        from semcache.ops.engines import export_cache

        return export_cache(self, folder, **options)

    def import_export(self, folder: str | os.PathLike[str], **options: Any) -> Any:
        """Merge an exported folder into this cache; see ``semcache.ops.export.import_export``.
        An export of either engine imports into either engine."""
        from semcache.ops.engines import import_cache

        return import_cache(self, folder, **options)

    def record_shadow(self, hit: CacheHit, fresh: BaseModel) -> bool:
        """Compare a semantic hit with the provider's fresh answer; True when they agree.

        Called by the wrapped clients for sampled hits; public for callers of the direct API.
        """
        return self.pipeline.record_shadow(hit, fresh)

    def __len__(self) -> int:
        return self._store.count()

    @property
    def db(self) -> SQLiteStore:
        """The underlying SQLite file, for code that reads a cache file's rows directly.

        A cache on PostgreSQL has no file: this raises ``UsageError`` there. Maintenance
        (``semcache.ops``, the command line) and instructor's ``cache=`` adapter take the store
        of either engine (``semcache.storage.open_existing``, ``SQLiteCache(cache)``)."""
        if not isinstance(self._store, SQLiteStore):
            raise UsageError(
                "cache.db is the SQLite file of a file cache; this cache is stored in "
                f"{self._store!r}: maintenance takes its store (semcache.storage.open_existing "
                "or the command line, which accept a postgresql:// URL)"
            )
        return self._store

    def close(self) -> None:
        """Write pending bookkeeping and close the file; idempotent."""
        if self._closed:
            return
        try:
            self.pipeline.close()
        finally:
            self._closed = True
            self._store.close()
            lifecycle.untrack(self)

    def __enter__(self) -> SemanticCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Write buffered hit counts, vetoes and audit rows (done every second anyway)."""
        self.pipeline.flush()

    # -- the shared lookup/store logic, for integrations and callers of the direct API -------

    def plan(self, **request: Any) -> Plan | None:
        """Key a request; None when it cannot be cached. See ``Pipeline.plan``."""
        return self.pipeline.plan(**request)

    def serve(self, plan: Plan) -> CacheHit | None:
        """Answer ``plan`` from the cache, or None; never raises for an internal failure."""
        return self.pipeline.serve(plan)

    def save(self, plan: Plan, value: BaseModel, completion: Any) -> int | None:
        """Store the provider's answer for ``plan``. Failures are logged, never raised."""
        return self.pipeline.save(plan, value, completion)
