"""Per-scope calibration on live labels, and auto_tune applying it through a real cache."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from semcache import SemanticCache
from semcache.calibration import MIN_LABELS, calibrate, curve, point_at
from semcache.types import Label


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def labels(low: float, high: float, n: int, correct: bool = True, stage: str = "") -> list[Label]:
    """``n`` labels evenly spread over [low, high)."""
    return [Label("s", low + (high - low) * i / n, correct, "near_miss", stage) for i in range(n)]


def test_enough_agreeing_labels_lower_the_threshold() -> None:
    decision = calibrate("s", labels(0.80, 0.87, 400), current=0.87, target=0.99)
    assert decision.action == "lower" and decision.proposed == pytest.approx(0.80)
    assert decision.at_proposed is not None and decision.at_proposed.low >= 0.99
    assert decision.evidence()["labels"] == 400 and decision.evidence()["from"] == 0.87


def test_too_few_agreeing_labels_keep_it() -> None:
    # 300 of 300 right: the 95% Wilson lower bound is 0.987, short of 0.99.
    decision = calibrate("s", labels(0.80, 0.87, 300), current=0.87, target=0.99)
    assert (decision.action, decision.proposed) == ("keep", None)


def test_a_minimum_number_of_labels_even_for_a_lax_target() -> None:
    few = labels(0.80, 0.87, MIN_LABELS - 10)
    assert point_at(few, 0.80).low >= 0.9
    assert calibrate("s", few, current=0.87, target=0.9).proposed is None


def test_it_stops_above_the_wrong_labels() -> None:
    rows = labels(0.83, 0.87, 500) + labels(0.80, 0.81, 20, correct=False)
    decision = calibrate("s", rows, current=0.87, target=0.99)
    assert decision.action == "lower"
    assert decision.proposed is not None and 0.81 < decision.proposed <= 0.831


def test_vetoed_labels_are_not_counted_as_served() -> None:
    rows = labels(0.80, 0.87, 400) + labels(0.80, 0.87, 50, correct=False, stage="rules")
    decision = calibrate("s", rows, current=0.87, target=0.99)
    assert decision.proposed == pytest.approx(0.80) and decision.vetoed == 50
    assert curve(rows)[-1].labels == 450 and curve(rows)[-1].served == 400


def test_confidently_wrong_hits_raise_the_threshold() -> None:
    rows = labels(0.86, 0.90, 30) + [Label("s", 0.885, False, "shadow") for _ in range(5)]
    decision = calibrate("s", rows, current=0.85, target=0.99)
    # The smallest raise that leaves the wrong labels below: the next right label above them.
    assert decision.action == "raise" and decision.proposed == pytest.approx(0.88533, abs=1e-4)
    assert decision.at_proposed is not None and decision.at_proposed.high >= 0.99


def test_with_no_right_label_above_it_goes_past_the_highest_wrong_one() -> None:
    rows = labels(0.86, 0.88, 30) + [Label("s", 0.95, False, "feedback") for _ in range(3)]
    decision = calibrate("s", rows, current=0.85, target=0.99)
    assert decision.action == "raise" and decision.proposed == pytest.approx(0.95 + 1e-4)


def test_a_few_wrong_hits_are_not_yet_evidence() -> None:
    rows = [*labels(0.86, 0.9, 60), Label("s", 0.88, False, "feedback")]
    assert point_at(rows, 0.85).high >= 0.99  # 60 of 61 could still be a 0.99 scope
    assert calibrate("s", rows, current=0.85, target=0.99).action == "keep"


def test_ties_are_one_point() -> None:
    rows = [Label("s", 0.9, True, "near_miss")] * 3 + [Label("s", 0.8, False, "near_miss")]
    assert [(p.threshold, p.served, p.correct) for p in curve(rows)] == [(0.9, 3, 3), (0.8, 4, 3)]


def test_a_label_with_a_rival_counts_only_above_it() -> None:
    """Answer agreement refuses the candidate wherever its rival is eligible too."""
    rows = [Label("s", 0.95, True, "near_miss", rival=0.93), Label("s", 0.92, False, "near_miss")]
    assert [(p.threshold, p.served, p.correct) for p in curve(rows)] == [(0.95, 1, 1), (0.92, 1, 0)]
    assert (point_at(rows, 0.94).served, point_at(rows, 0.93).served) == (1, 0)


@pytest.mark.parametrize("seed", range(5))
def test_the_curve_with_rivals_is_the_labels_served_at_each_threshold(seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for _ in range(300):
        similarity = round(rng.uniform(0.8, 1.0), 2)  # rounded: ties, and rivals equal to labels
        rival = round(similarity - rng.uniform(0.0, 0.05), 2) if rng.random() < 0.4 else None
        stage = "rules.number" if rng.random() < 0.1 else ""
        rows.append(Label("s", similarity, rng.random() < 0.8, "near_miss", stage, rival=rival))
    for point in curve(rows):
        served = [lb for lb in rows if lb.served_at(point.threshold)]
        assert (point.served, point.correct) == (len(served), sum(lb.correct for lb in served))
        assert point == point_at(rows, point.threshold)


# -- through a cache ----------------------------------------------------------------------------


def near_miss_rows(scope: str, sims: list[float], agree: bool = True) -> list[tuple[Any, ...]]:
    return [
        (
            time.time(),
            scope,
            1,
            s,
            0.95,
            "",
            int(agree),
            "[]" if agree else '["text"]',
            "q",
            "c",
            "{}",
            "{}",
            None,
        )
        for s in sims
    ]


def scope_of(cache: SemanticCache) -> str:
    return str(cache.db.connection().execute("SELECT scope FROM entries").fetchone()[0])


STORED, NEAR = "How do I reset my password?", "I forgot my password, how can I reset it?"


@pytest.mark.parametrize("auto_tune", [True, False])
def test_auto_tune_lowers_a_scope_on_its_labels(
    db_path: Path, embedder: Any, auto_tune: bool
) -> None:
    a, b = embedder.embed([STORED, NEAR])
    gap = float(a @ b)
    with SemanticCache(
        db_path, embedder=embedder, verifier=None, threshold=gap + 0.04, auto_tune=auto_tune
    ) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        scope = scope_of(c)
        sims = [gap - 0.005 + 0.045 * i / 450 for i in range(450)]
        c.db.record({}, {}, {"near_misses": near_miss_rows(scope, sims)})
        c.pipeline._maintain()  # the periodic job, run now
        hit = c.lookup(user(NEAR), Answer)
        assert (hit is not None) is auto_tune
        if auto_tune:
            assert c.thresholds()[f"scope:{scope}"] == pytest.approx(gap - 0.005)
            (change,) = c.stats().threshold_changes
            assert (change.target, change.old, change.source) == (f"scope:{scope}", None, "auto")
            assert change.new == pytest.approx(gap - 0.005)
            assert change.evidence["labels"] == 450 and change.evidence["low"] >= 0.99
            assert change.evidence["from"] == pytest.approx(gap + 0.04)
        else:
            assert c.thresholds() == {} and c.stats().threshold_changes == ()


def test_tune_proposes_and_applies_on_request(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, threshold=0.95) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        scope = scope_of(c)
        c.db.record({}, {}, {"near_misses": near_miss_rows(scope, [0.93] * 400)})
        (decision,) = c.tune()
        assert (decision.scope, decision.current, decision.proposed) == (scope, 0.95, 0.93)
        assert c.thresholds() == {}  # only proposed
        c.tune(apply=True)
        assert c.thresholds() == {f"scope:{scope}": 0.93}
        assert c.stats().threshold_changes[0].source == "tune"


def test_labels_gather_near_misses_shadow_checks_and_feedback(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, threshold=0.6, verifier=None) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        hit = c.lookup(user(NEAR), Answer)
        assert hit is not None and hit.tier == "semantic"
        c.mark_wrong(hit)
        c.record_shadow(hit, Answer(text="reset"))
        exact = c.lookup(user(STORED), Answer)
        assert exact is not None
        c.mark_wrong(exact)  # says nothing about a similarity: not a label
        c.db.record({}, {}, {"near_misses": near_miss_rows(hit.scope, [0.5], agree=False)})
        found = sorted((lb.source, lb.correct, round(lb.similarity, 4)) for lb in c.db.labels())
    assert found == [
        ("feedback", False, round(hit.similarity, 4)),
        ("near_miss", False, 0.5),
        ("shadow", True, round(hit.similarity, 4)),
    ]


def test_every_threshold_change_is_logged(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder) as c:
        c.set_threshold(0.9)
        c.set_threshold(0.9)  # no change, no row
        c.set_threshold(0.92, scope="abc")
        c.set_threshold(None)
        rows = c.db.connection().execute(
            "SELECT target, old, new, source, evidence FROM threshold_changes ORDER BY id"
        )
        assert [(t, o, n, s, json.loads(e)) for t, o, n, s, e in rows] == [
            ("default", None, 0.9, "user", {}),
            ("scope:abc", None, 0.92, "user", {}),
            ("default", 0.9, None, "user", {}),
        ]


def test_auto_tune_waits_for_enough_new_labels(db_path: Path, embedder: Any) -> None:
    a, b = embedder.embed([STORED, NEAR])
    gap = float(a @ b)
    with SemanticCache(
        db_path, embedder=embedder, verifier=None, threshold=gap + 0.04, auto_tune=True
    ) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        c.pipeline._maintain()  # the first calibration, on no labels
        scope = scope_of(c)
        sims = [gap - 0.005 + 0.045 * i / 450 for i in range(450)]
        c.db.record({}, {}, {"near_misses": near_miss_rows(scope, sims)})  # written elsewhere
        c.pipeline._maintain()
        assert c.thresholds() == {}  # no new label of its own yet, and not ten minutes later
        hit = c.lookup(user(NEAR), Answer, threshold=0.5)  # a hit to shadow-check
        assert hit is not None
        for _ in range(49):
            c.record_shadow(hit, Answer(text="reset"))
        c.pipeline._maintain()
        assert c.thresholds() == {}
        c.record_shadow(hit, Answer(text="reset"))  # the 50th
        c.pipeline._maintain()
        assert c.thresholds()[f"scope:{scope}"] == pytest.approx(gap - 0.005)
        assert c.lookup(user(NEAR), Answer) is not None


def test_marking_a_semantic_hit_wrong_counts_as_a_new_label(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, threshold=0.6, verifier=None) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        hit = c.lookup(user(NEAR), Answer)
        exact = c.lookup(user(STORED), Answer)
        assert hit is not None and exact is not None
        before = c.pipeline.upkeep._new_labels
        c.mark_wrong(exact)
        assert c.pipeline.upkeep._new_labels == before
        c.mark_wrong(hit)
        assert c.pipeline.upkeep._new_labels == before + 1
