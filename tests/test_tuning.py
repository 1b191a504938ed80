"""Calibration: intervals on known counts, choosing by the lower bound, sweeps over a labeled file,
and writing the choice into a cache."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from semcache import SemanticCache
from semcache.embedding import SentenceTransformerEmbedder
from semcache.intervals import wilson_interval
from semcache.ops import tuning
from semcache.verifiers import RuleVerifier

Z2 = 1.959963984540054**2


def rows(spec: Sequence[tuple[float, int, int]]) -> list[tuning.ScoredPair]:
    """(similarity, label, how many) -> scored pairs, all accepted by the verifier."""
    return [
        tuning.ScoredPair(f"q{i}", f"c{i}", label, similarity=similarity)
        for similarity, label, n in spec
        for i in range(n)
    ]


def test_wilson_interval_on_known_counts() -> None:
    # At the edges the bounds have closed forms: n / (n + z^2) and z^2 / (n + z^2).
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + Z2), 1.0))
    assert wilson_interval(0, 10) == pytest.approx((0.0, Z2 / (10 + Z2)))
    # 81 of 263, a textbook example: (0.2553, 0.3662).
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    narrower = wilson_interval(990, 1000, confidence=0.9)
    wider = wilson_interval(990, 1000, confidence=0.99)
    assert wider[0] < narrower[0] < 0.99 < narrower[1] < wider[1]


def test_operating_point_counts_rates_and_intervals() -> None:
    data = rows([(0.95, 1, 8), (0.95, 0, 2), (0.80, 1, 10), (0.5, 0, 30)])
    point = tuning.operating_point(data, 0.9)
    assert (point.hits, point.correct_hits, point.wrong_hits) == (10, 8, 2)
    assert (point.positives, point.negatives) == (18, 32)
    assert point.precision == pytest.approx(0.8)
    assert (point.precision_low, point.precision_high) == pytest.approx(wilson_interval(8, 10))
    assert point.recall == pytest.approx(8 / 18)
    assert (point.recall_low, point.recall_high) == pytest.approx(wilson_interval(8, 18))
    assert point.false_hit_rate == pytest.approx(2 / 32)
    assert point.f1 == pytest.approx(2 * 0.8 * (8 / 18) / (0.8 + 8 / 18))
    assert point.f1_low <= point.f1 <= point.f1_high
    assert point.hit_rate == pytest.approx(10 / 50)
    # A veto removes a hit only when verification counts.
    vetoed = [tuning.ScoredPair("a", "b", 0, similarity=0.99, accepted=False, reason="x")]
    assert tuning.operating_point(data + vetoed, 0.9).wrong_hits == 2
    assert tuning.operating_point(data + vetoed, 0.9, verified=False).wrong_hits == 3


def test_choose_threshold_uses_the_lower_bound_not_the_point_estimate() -> None:
    # 400 right hits at 0.95; at 0.80, 100 more right and 3 wrong: precision 0.994 there, but its
    # lower bound (0.983) misses 0.99. A point-estimate rule would pick 0.80.
    data = rows([(0.95, 1, 400), (0.80, 1, 100), (0.80, 0, 3), (0.3, 0, 50)])
    at_080 = tuning.operating_point(data, 0.80)
    assert at_080.precision >= 0.99 > at_080.precision_low
    choice = tuning.choose_threshold(data, target_precision=0.99)
    assert choice is not None
    assert choice.threshold == pytest.approx(0.95)
    assert choice.precision_low >= 0.99
    assert choice.recall == pytest.approx(400 / 500)
    # Ten perfect hits have a point precision of 1.0, but vouch for no more than 0.72.
    few = rows([(0.97, 1, 10), (0.4, 0, 10)])
    assert tuning.choose_threshold(few, target_precision=0.95) is None
    assert tuning.choose_threshold(few, target_precision=0.7).threshold == pytest.approx(0.97)


def test_best_precision_at_recall() -> None:
    data = rows([(0.99, 1, 30), (0.9, 0, 1), (0.85, 1, 70), (0.6, 0, 40)])
    point = tuning.best_precision_at_recall(data, 0.3)
    assert point is not None and point.threshold == pytest.approx(0.99)
    assert point.precision == 1.0
    assert tuning.best_precision_at_recall(data, 0.5).threshold == pytest.approx(0.85)
    assert tuning.best_precision_at_recall(rows([(0.9, 0, 5)]), 0.1) is None


def test_load_pairs_formats(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    lines = [
        {"a": "x", "b": "y", "label": 1, "kind": "paraphrase", "split": "test"},
        {"a": "x", "b": "z", "label": 0, "kind": "number", "split": "train"},
        {"a": "u", "b": "v", "label": 4.2, "label_bin": 1},  # STS-B: the bin wins
        {"a": "u", "b": "w", "label": 3.0, "label_bin": None},  # between the bins: skipped
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    assert [p.label for p in tuning.load_pairs(path)] == [1, 0, 1]
    assert [p.b for p in tuning.load_pairs(path, split="train")] == ["z"]
    assert [p.b for p in tuning.load_pairs(path, kinds={"paraphrase"})] == ["y"]
    assert len(tuning.load_pairs(path, sample=2)) == 2
    path.write_text(json.dumps({"a": "x", "b": "y", "label": 3}))
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        tuning.load_pairs(path)
    path.write_text(json.dumps({"a": "x", "label": 1}))
    with pytest.raises(ValueError, match="needs a, b and label"):
        tuning.load_pairs(path)
    ours = tuning.load_pairs(tuning.default_pairs_path(), split="test", sample=50)
    assert len(ours) == 50 and {p.split for p in ours} == {"test"}


SMALL_FILE = [
    ("How do I reset my password?", "How can I reset my password?", 1),
    ("What is the capital of France?", "what's the capital of france", 1),
    ("Where is my order A-10578?", "where's order A-10578", 1),
    ("Book a flight from Paris to Rome", "Book a flight from Rome to Paris", 0),
    ("Is the store open on Sunday?", "Is the store closed on Sunday?", 0),
    ("Where is my order A-10578?", "Where is my order A-10587?", 0),
    ("How do I bake sourdough bread?", "What is the weather in Oslo tomorrow?", 0),
]


def test_sweep_file_on_a_small_labeled_file(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text(
        "".join(json.dumps({"a": a, "b": b, "label": y}) + "\n" for a, b, y in SMALL_FILE)
    )
    thresholds = [0.5, 0.8, 0.9, 0.99]
    table = tuning.sweep_file(path, embedder=embedder, verifier=None, thresholds=thresholds)
    assert [row["threshold"] for row in table] == [0.5, 0.8, 0.9, 0.99]
    for row in table:
        for key in ("precision", "recall", "false_hit_rate", "f1"):
            assert 0.0 <= row[f"{key}_low"] <= row[key] <= row[f"{key}_high"] <= 1.0
    recalls = [row["recall"] for row in table]
    assert recalls == sorted(recalls, reverse=True)
    # Cosine alone serves the look-alikes (all above 0.9); the verifier vetoes them.
    assert table[2]["wrong_hits"] >= 2
    verified = tuning.sweep_file(path, embedder=embedder, thresholds=[0.9])  # default verifier
    assert verified[0]["wrong_hits"] == 0 and verified[0]["precision"] == 1.0
    assert verified[0]["verified"] and not table[2]["verified"]
    scored = tuning.score_pairs(tuning.load_pairs(path), embedder, RuleVerifier())
    vetoed = tuning.vetoed(scored, 0.9)
    assert {r.stage for r in vetoed} >= {"rules.swap", "rules.antonym", "rules.identifier"}
    assert tuning.wrong_hits(scored, 0.9) == []
    assert len(tuning.wrong_hits(scored, 0.9, verified=False)) >= 2
    markdown = tuning.table(vetoed, ["similarity", "reason", "a"])
    assert markdown.count("\n") == len(vetoed) + 1 and "| similarity | reason | a |" in markdown


def test_embeddings_are_cached_on_disk(tmp_path: Path) -> None:
    class Counting:
        name = "counting/model"
        dimension = 2
        calls = 0

        def embed(self, texts: Sequence[str]) -> np.ndarray:
            Counting.calls += 1
            return np.array([[1.0, 0.0] if "a" in t else [0.0, 1.0] for t in texts], np.float32)

        def fits(self, text: str) -> bool:
            return True

    pairs = [tuning.LabeledPair("a1", "a2", 1), tuning.LabeledPair("a1", "b1", 0)]
    first = tuning.similarities(pairs, Counting(), cache_dir=str(tmp_path))
    second = tuning.similarities(pairs, Counting(), cache_dir=str(tmp_path))
    assert first == second == [1.0, 0.0]
    assert Counting.calls == 1 and len(list(tmp_path.glob("counting_model-*.npz"))) == 1


def test_apply_threshold_persists_it_in_the_cache(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    class Ticket(BaseModel):
        category: str

    point = tuning.choose_threshold(rows([(0.87, 1, 500), (0.4, 0, 5)]), 0.98)
    assert point is not None
    with SemanticCache(tmp_path / "cache.db", embedder=embedder) as cache:
        assert tuning.apply_threshold(cache, point, response_model=Ticket) == pytest.approx(0.87)
        tuning.apply_threshold(cache, 0.93)
        assert sorted(cache.thresholds().values()) == pytest.approx([0.87, 0.93])
    with pytest.raises(TypeError, match="set_threshold"):
        tuning.apply_threshold(object(), 0.9)


def test_our_labeled_pairs_are_up_to_date() -> None:
    build = Path(__file__).resolve().parent.parent / "data" / "pairs" / "build.py"
    subprocess.run([sys.executable, str(build), "--check"], check=True, capture_output=True)


def test_importing_tuning_does_not_import_torch() -> None:
    code = "import sys, semcache.ops.tuning; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
