"""Feedback and totals: what an application tells a cache about its answers, and what it reads back.

``SemanticCache.mark_wrong``, ``set_threshold`` and ``stats`` act on the store's bookkeeping and on
the pipeline's upkeep, never on a request; they are written here, over a ``Pipeline``, so that the
facade only documents them (as ``semcache.bulk`` does for ``store_many``). A semantic hit marked
wrong is also a label for calibration (``semcache.calibration``), and a threshold set here applies
to this cache at once and to every other cache on the same store within a second
(``semcache.upkeep`` reads thresholds back).
"""

from __future__ import annotations

from pydantic import BaseModel

from semcache import lifecycle
from semcache.pipeline import Pipeline
from semcache.types import CacheHit, CacheStats


def stats(pipeline: Pipeline) -> CacheStats:
    """Totals for the whole store, across processes (pending counts are written first)."""
    pipeline.flush()
    store = pipeline.store
    counters = store.counters()
    exact, semantic = counters.get("exact_hits", 0), counters.get("semantic_hits", 0)
    return CacheStats(
        entries=store.count(),
        exact_hits=exact,
        semantic_hits=semantic,
        misses=counters.get("misses", 0),
        calls_avoided=exact + semantic,
        tokens_avoided=counters.get("tokens_avoided", 0),
        semantic_precision=pipeline.shadow.estimates(),
        threshold_changes=tuple(store.threshold_changes()),
        store_outages=store.outages(),
    )


def set_threshold(
    pipeline: Pipeline,
    threshold: float | None,
    *,
    response_model: type[BaseModel] | None,
    scope: str | None,
    source: str,
) -> None:
    """Persist (or, with None, remove) the threshold of one response_model, one scope or, with
    neither, the store's default; this pipeline reads the persisted thresholds back at once."""
    if threshold is not None:
        lifecycle.check_threshold(threshold)
    target = lifecycle.threshold_target(response_model, scope)
    pipeline.store.set_threshold(target, threshold, source)
    pipeline.thresholds = pipeline.store.thresholds()


def mark_wrong(pipeline: Pipeline, hit: CacheHit, note: str) -> None:
    """Record that ``hit`` was a wrong answer: feedback that vetoes it for that query and its
    near-duplicates (``semcache.semantic``), and a label; an exact hit's entry is deleted."""
    vector = None
    if hit.tier == "semantic" and hit.query is not None:
        vector = pipeline.embedder.embed([hit.query])[0]
    pipeline.store.add_feedback(
        hit.entry_id, hit.scope, hit.query, hit.matched_prompt, hit.similarity, vector, note
    )
    if vector is not None:  # a wrong semantic hit is a label for calibration
        pipeline.upkeep.labelled()
    if hit.tier == "exact":
        pipeline.store.delete(hit.entry_id)
