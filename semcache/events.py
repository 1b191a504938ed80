"""Typed cache events, delivered to callbacks, to ``logging`` and (when installed) OpenTelemetry.

Every decision the cache makes is observable without patching it: register a callback with
``cache.events.on(callback)`` (optionally for some event types only). A callback that raises is
logged and ignored, so observability can never break a lookup. When ``opentelemetry-api`` is
importable, the same events feed counters and a latency histogram on the ``semcache`` meter; it is
not a dependency.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("semcache.events")


@dataclass(frozen=True)
class Event:
    """Base of every event: the request's namespace and scope."""

    namespace: str
    scope: str


@dataclass(frozen=True)
class LookupEvent(Event):
    """One lookup finished: ``tier`` is "exact", "semantic" or None for a miss."""

    tier: str | None
    similarity: float | None
    latency_ms: float
    entry_id: int | None = None


@dataclass(frozen=True)
class HitEvent(Event):
    """A cached answer was served."""

    tier: str
    similarity: float
    entry_id: int
    query: str | None
    matched_prompt: str | None


@dataclass(frozen=True)
class MissEvent(Event):
    """Nothing was served; ``best_similarity`` is the nearest candidate's, if any."""

    query: str | None
    best_similarity: float | None = None


@dataclass(frozen=True)
class VetoEvent(Event):
    """A candidate above the threshold was refused by a verifier or by feedback."""

    entry_id: int
    query: str
    candidate: str
    similarity: float
    stage: str
    reason: str


@dataclass(frozen=True)
class StoreEvent(Event):
    """An answer was stored (``replaced`` is the id of the entry it replaced, if any)."""

    entry_id: int
    replaced: int | None = None


@dataclass(frozen=True)
class EvictEvent(Event):
    """Entries were removed to honour a TTL or a size bound."""

    entry_ids: tuple[int, ...] = field(default_factory=tuple)
    reason: str = ""


@dataclass(frozen=True)
class ErrorEvent(Event):
    """An internal failure the caller did not see (the provider was called instead)."""

    operation: str
    error: str


Callback = Callable[[Event], Any]


class EventBus:
    """Fan-out of events to callbacks, the ``semcache.events`` logger and OpenTelemetry."""

    def __init__(self) -> None:
        self._callbacks: list[tuple[Callback, tuple[type[Event], ...]]] = []
        self._lock = threading.Lock()
        self._metrics = _Metrics.create()

    def on(self, callback: Callback, *types: type[Event]) -> Callback:
        """Call ``callback(event)`` for every event, or only for the given event types.

        Returns the callback, so it can be used as a decorator.
        """
        with self._lock:
            self._callbacks.append((callback, types or (Event,)))
        return callback

    def off(self, callback: Callback) -> None:
        with self._lock:
            self._callbacks = [(c, t) for c, t in self._callbacks if c is not callback]

    @property
    def active(self) -> bool:
        """Whether anybody listens (lets the hot path skip building events nobody reads)."""
        return bool(self._callbacks) or self._metrics is not None or logger.isEnabledFor(10)

    def emit(self, event: Event) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", event)
        if self._metrics is not None:
            self._metrics.record(event)
        for callback, types in list(self._callbacks):
            if isinstance(event, types):
                try:
                    callback(event)
                except Exception:
                    logger.exception("semcache: event callback %r failed", callback)


class _Metrics:
    """OpenTelemetry instruments, created only when ``opentelemetry-api`` is installed."""

    def __init__(self, meter: Any) -> None:
        self.lookups = meter.create_counter("semcache.lookups", description="cache lookups")
        self.vetoes = meter.create_counter("semcache.vetoes", description="vetoed candidates")
        self.stores = meter.create_counter("semcache.stores", description="answers stored")
        self.evictions = meter.create_counter("semcache.evictions", description="entries evicted")
        self.errors = meter.create_counter("semcache.errors", description="internal failures")
        self.latency = meter.create_histogram(
            "semcache.lookup.latency", unit="ms", description="lookup latency"
        )

    @classmethod
    def create(cls) -> _Metrics | None:
        try:
            from opentelemetry import metrics  # type: ignore[attr-defined]
        except ImportError:
            return None
        return cls(metrics.get_meter("semcache"))

    def record(self, event: Event) -> None:
        if isinstance(event, LookupEvent):
            attrs = {"tier": event.tier or "miss"}
            self.lookups.add(1, attrs)
            self.latency.record(event.latency_ms, attrs)
        elif isinstance(event, VetoEvent):
            self.vetoes.add(1, {"stage": event.stage})
        elif isinstance(event, StoreEvent):
            self.stores.add(1)
        elif isinstance(event, EvictEvent):
            self.evictions.add(len(event.entry_ids), {"reason": event.reason})
        elif isinstance(event, ErrorEvent):
            self.errors.add(1, {"operation": event.operation})
