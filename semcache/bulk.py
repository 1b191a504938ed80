"""Bulk loading: ``SemanticCache.store_many``.

Storing answers one by one pays one embedding call and one SQLite commit per answer; a commit costs
about as much as writing a hundred rows, and the embedder is several times faster per text in a
batch. So items are keyed one by one (as ``store`` does), then embedded and written a batch at a
time: one ``embed`` call and one transaction per batch. A batch is all or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from semcache.errors import UsageError
from semcache.pipeline import Pipeline
from semcache.requests import Plan

Item = tuple[Sequence[Any], BaseModel] | tuple[Sequence[Any], BaseModel, Any]


def store_many(
    pipeline: Pipeline,
    items: Iterable[Item],
    response_model: type[BaseModel],
    *,
    model: str | None,
    context: Mapping[str, Any] | None,
    strict: bool,
    provider: str,
    mode: str,
    ttl: float | None,
    batch_size: int,
    params: Mapping[str, Any],
) -> list[int | None]:
    """Store ``items`` in batches; the entry ids in item order (None where not cacheable).

    An item that is not a ``(messages, value[, completion])`` tuple, or whose value is not a
    ``response_model``, raises ``UsageError`` before its batch writes anything (earlier batches
    stay written).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
    ids: list[int | None] = []
    batch: list[tuple[Plan | None, BaseModel, Any]] = []
    for item in items:
        if not isinstance(item, tuple) or len(item) not in (2, 3):
            raise UsageError("store_many takes (messages, value[, completion]) tuples")
        messages, value = item[0], item[1]
        if not isinstance(value, response_model):
            raise UsageError(f"value is a {type(value).__name__}, not a {response_model.__name__}")
        plan = pipeline.plan(
            messages=messages, response_model=response_model, model=model, context=context,
            strict=strict, provider=provider, mode=mode, params=params, ttl=ttl,
        )  # fmt: skip
        batch.append((plan, value, item[2] if len(item) == 3 else None))
        if len(batch) >= batch_size:
            ids.extend(_write_batch(pipeline, batch))
            batch = []
    if batch:
        ids.extend(_write_batch(pipeline, batch))
    return ids


def _write_batch(
    pipeline: Pipeline, batch: list[tuple[Plan | None, BaseModel, Any]]
) -> list[int | None]:
    if pipeline.disabled:
        return [None] * len(batch)
    todo = [(plan, value, completion) for plan, value, completion in batch if plan is not None]
    written = iter(pipeline.save_many(todo) if todo else [])
    return [None if plan is None else next(written) for plan, _, _ in batch]
