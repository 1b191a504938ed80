"""A request's answer between the provider and storage: the plan of one request, the row stored
for an answer, and the answer served from a row.

An answer is stored only when it rehydrates to the same object (a JSON round trip through the
response model), and served only when the stored JSON still validates against the *current*
response_model; the similarity that decides a semantic hit is computed here, from the float32
vector storage holds, and is the one ``CacheHit.similarity`` reports. A served answer carries its
``CacheHit``, which ``cache_hit`` (public as ``semcache.cache_hit``) reads back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from semcache.keys import KeyedRequest
from semcache.serialization import attach, dump_completion, restore_completion
from semcache.storage.base import NewEntry
from semcache.types import CacheHit, StoredEntry, Tier

logger = logging.getLogger("semcache")


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


def entry_for(
    plan: Plan, value: BaseModel, completion: Any, vector: np.ndarray | None, ttl: float | None
) -> NewEntry | None:
    """The row for one answer; None when the answer does not survive a JSON round trip."""
    keyed, model_cls = plan.keyed, plan.response_model
    response_json = value.model_dump_json(by_alias=True)
    # Store only what rehydrates to the same object; anything else would be a wrong answer later.
    again = model_cls.model_validate_json(response_json, context=plan.context, strict=plan.strict)
    if again.model_dump() != value.model_dump():
        logger.debug("semcache: %s does not round-trip through JSON; not cached", model_cls)
        return None
    raw_json, usage_json, total_tokens = dump_completion(completion)
    ttl = plan.ttl if plan.ttl is not None else ttl
    return NewEntry(
        exact_key=keyed.exact_key, scope=keyed.scope, namespace=keyed.namespace,
        model=keyed.model, schema_name=keyed.schema_name, prompt=keyed.text,
        request_json=keyed.request_json, response_json=response_json, raw_json=raw_json,
        usage_json=usage_json, total_tokens=total_tokens, embedding=vector,
        expires_at=None if ttl is None else time.time() + ttl,
    )  # fmt: skip


def rehydrate(plan: Plan, entry: StoredEntry, similarity: float, tier: Tier) -> CacheHit | None:
    """Validate a stored answer against the current model; None when it no longer validates."""
    try:
        value = plan.response_model.model_validate_json(
            entry.response_json, context=plan.context, strict=plan.strict
        )
    except Exception as exc:  # ValidationError, or a validator that raises something else
        logger.debug("semcache: entry %s no longer validates, treated as a miss: %s", entry.id, exc)
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


def cache_hit(value: Any) -> CacheHit | None:
    """The ``CacheHit`` that produced ``value`` (attached by ``rehydrate`` or a replayed stream),
    or None when it came from the provider."""
    hit = getattr(value, "_semcache_hit", None)
    return hit if isinstance(hit, CacheHit) else None


def stored_similarity(blob: bytes | None, vector: np.ndarray) -> float:
    """Cosine similarity of a stored float32 blob and a query vector (both unit length)."""
    if blob is None or len(blob) != vector.size * 4:
        return -2.0  # below any threshold: a missing or damaged vector never matches
    return min(1.0, float(np.frombuffer(blob, dtype="<f4") @ vector))
