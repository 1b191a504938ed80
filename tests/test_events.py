"""Events to callbacks and the audit log of semantic decisions."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from semcache import SemanticCache
from semcache.events import (
    Event,
    HitEvent,
    LookupEvent,
    MissEvent,
    StoreEvent,
    VetoEvent,
)
from semcache.verifiers.base import Verdict


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class NoSeven:
    name = "no-seven"

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        return Verdict("7" not in query, "sevens are refused")


def test_callbacks_see_every_decision(db_path: Path, embedder: Any) -> None:
    seen: list[Event] = []
    with SemanticCache(db_path, embedder=embedder, verifier=NoSeven(), threshold=0.8) as c:
        c.events.on(seen.append)
        vetoes: list[Event] = []
        c.events.on(vetoes.append, VetoEvent)
        c.store(user("Where is order 1234?"), Answer, Answer(text="a"))
        start = time.perf_counter()
        c.lookup(user("Where is order 1234?"), Answer)
        c.lookup(user("where is order 1234"), Answer)
        c.lookup(user("Where is order 1237?"), Answer)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
    kinds = [type(e).__name__ for e in seen]
    assert kinds == [
        "StoreEvent",
        "LookupEvent", "HitEvent",
        "LookupEvent", "HitEvent",
        "VetoEvent", "LookupEvent", "MissEvent",
    ]  # fmt: skip
    assert isinstance(seen[0], StoreEvent) and seen[0].entry_id == 1
    lookups = [e for e in seen if isinstance(e, LookupEvent)]
    assert [e.tier for e in lookups] == ["exact", "semantic", None]
    # Milliseconds, measured inside each call: positive, and together within the calls' wall time.
    assert all(e.latency_ms > 0 for e in lookups)
    assert sum(e.latency_ms for e in lookups) <= elapsed_ms
    hits = [e for e in seen if isinstance(e, HitEvent)]
    assert hits[1].similarity < 1.0 and hits[1].matched_prompt == "Where is order 1234?"
    assert [type(e) for e in vetoes] == [VetoEvent]
    assert isinstance(seen[-1], MissEvent) and seen[-1].query == "Where is order 1237?"


def test_a_failing_callback_never_breaks_a_lookup(
    cache: SemanticCache, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(event: Event) -> None:
        raise RuntimeError("observer bug")

    cache.events.on(boom)
    cache.store(user("Where is my parcel?"), Answer, Answer(text="a"))
    with caplog.at_level(logging.ERROR, logger="semcache.events"):
        assert cache.lookup(user("Where is my parcel?"), Answer) is not None
    assert "observer bug" in caplog.text
    cache.events.off(boom)


def test_audit_log_records_semantic_decisions(db_path: Path, embedder: Any) -> None:
    with SemanticCache(
        db_path, embedder=embedder, verifier=NoSeven(), threshold=0.8, audit=True, audit_max_rows=3
    ) as c:
        c.store(user("Where is order 1234?"), Answer, Answer(text="a"))
        c.lookup(user("where is order 1234"), Answer)
        c.lookup(user("Where is order 1237?"), Answer)
        c.lookup(user("What is the weather like on Mars?"), Answer)
        c.flush()
        rows = (
            c.db.connection()
            .execute("SELECT query, matched_prompt, verdict, reason FROM audit ORDER BY id")
            .fetchall()
        )
        assert rows == [
            ("where is order 1234", "Where is order 1234?", "hit", ""),
            (
                "Where is order 1237?",
                "Where is order 1234?",
                "veto",
                "no-seven: sevens are refused",
            ),
            ("What is the weather like on Mars?", None, "below_threshold", ""),
        ]
        c.lookup(user("where is order 1234 now"), Answer)
        c.flush()
        c.db.trim_audit(older_than=None, max_rows=c.audit_max_rows)
        (count,) = c.db.connection().execute("SELECT count(*) FROM audit").fetchone()
        assert count == 3


def test_opentelemetry_metrics_when_installed(db_path: Path, embedder: Any) -> None:
    # opentelemetry-sdk comes with the dev extra: imported, not skipped.
    import opentelemetry.sdk.metrics as sdk_metrics
    import opentelemetry.sdk.metrics.export as export
    from opentelemetry import metrics

    reader = export.InMemoryMetricReader()
    metrics.set_meter_provider(sdk_metrics.MeterProvider(metric_readers=[reader]))
    with SemanticCache(db_path, embedder=embedder, verifier=NoSeven(), threshold=0.8) as c:
        c.store(user("Where is order 1234?"), Answer, Answer(text="a"))
        c.lookup(user("Where is order 1234?"), Answer)
        c.lookup(user("Where is order 1237?"), Answer)
    points: dict[str, list[Any]] = {}
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    lookups = {p.attributes["tier"]: p.value for p in points["semcache.lookups"]}
    assert lookups == {"exact": 1, "miss": 1}
    assert sum(p.value for p in points["semcache.vetoes"]) == 1
    assert sum(p.value for p in points["semcache.stores"]) == 1
    assert sum(p.count for p in points["semcache.lookup.latency"]) == 2
