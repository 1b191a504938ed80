"""A cache's settings: the constructor arguments that shape lookups and stores, and their checks.

``SemanticCache`` (``semcache.cache``) takes them as keyword arguments and documents them; the
pipeline, the semantic tier and upkeep read them. They live apart from both so that each argument
is checked once, beside the field that holds it, and so that everything under the facade can read
them (and their defaults) without importing it.

``threshold=None`` (the default) means the embedding model's own default threshold
(``semcache.embedding.resolve.default_threshold``): the pipeline settles it once the model is known.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from semcache import calibration, labels, lifecycle
from semcache.embedding.resolve import default_threshold
from semcache.errors import UsageError
from semcache.index.stages import VECTOR_KINDS, VectorKind
from semcache.keys import TextFn
from semcache.storage.base import SEARCHES, Search, Store
from semcache.verifiers.agreement import DEFAULT_MARGIN

# The threshold of a new cache made with every default (the default embedder's own).
DEFAULT_THRESHOLD = default_threshold(None)
DEFAULT_NAMESPACE = "default"
DEFAULT_NEAR_MISS_BAND = labels.DEFAULT_BAND  # why this much: semcache.labels


@dataclass(frozen=True)
class Settings:
    """A cache's constructor arguments that shape lookups and stores (see ``checked``)."""

    threshold: float | None = None  # None: the embedding model's default threshold
    namespace: str = DEFAULT_NAMESPACE
    text_fn: TextFn | None = None
    ttl: float | None = None
    max_entries: int | None = None
    audit: bool = False
    audit_retention: float = 30 * 86400.0
    audit_max_rows: int = 100_000
    index_vectors: VectorKind = "float32"
    search: Search = "local"  # "pgvector": the database proposes candidates, not FAISS here
    agreement_margin: float | None = DEFAULT_MARGIN  # None: serve without answer agreement
    schema_evidence: bool = True  # words naming an answer value must match (schema_terms)
    near_miss_band: float | None = DEFAULT_NEAR_MISS_BAND  # None: take no near-miss labels
    auto_tune: bool = False
    target_precision: float = calibration.DEFAULT_TARGET


def recorded_threshold(store: Store) -> float:
    """The default threshold of the caches on ``store``, for tools that read it without a cache
    (``semcache query``, ``semcache tune --from-traffic``): the default of the embedding model its
    settings record, else, when nothing is embedded yet, of the default model."""
    return default_threshold(store.settings().get("embedder_name"))


def checked(settings: Settings) -> Settings:
    """``settings`` as given by a caller, checked: a ``UsageError`` naming the first argument out of
    range, else the same settings with the threshold, ttl and size bound normalised."""
    if settings.index_vectors not in VECTOR_KINDS:
        raise UsageError(f"index_vectors must be one of {', '.join(VECTOR_KINDS)}")
    if settings.search not in SEARCHES:
        raise UsageError(f"search must be one of {', '.join(SEARCHES)}")
    margin, band = settings.agreement_margin, settings.near_miss_band
    if margin is not None and not 0.0 <= margin <= 2.0:
        raise UsageError("agreement_margin must be None or a similarity gap in [0, 2]")
    if band is not None and not 0.0 <= band <= 2.0:
        raise UsageError("near_miss_band must be None or a similarity gap in [0, 2]")
    if not 0.0 < settings.target_precision <= 1.0:
        raise UsageError(
            f"target_precision is a precision in (0, 1], got {settings.target_precision}"
        )
    if not isinstance(settings.namespace, str) or not settings.namespace:
        raise UsageError("namespace must be a non-empty string")
    threshold = settings.threshold
    return dataclasses.replace(
        settings,
        threshold=None if threshold is None else lifecycle.check_threshold(threshold),
        ttl=lifecycle.check_ttl(settings.ttl),
        max_entries=lifecycle.check_max_entries(settings.max_entries),
    )
