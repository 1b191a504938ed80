"""Calibration: measure what a threshold (and a verifier) does on labeled pairs, and choose one.

A labeled pair is two requests and whether the cached answer of one is right for the other
(``label`` 1) or wrong (0). For a threshold ``t`` a pair is a *hit* when ``similarity >= t`` (cosine
similarity, the cache's only scale) and, when a verifier was used, the verifier accepted it. Then:

* **precision** = correct hits / hits: how often a served answer is right;
* **recall** = correct hits / pairs labeled 1: how many of the possible hits are served;
* **false-hit rate** = wrong hits / pairs labeled 0: how many must-miss requests get served;
* **F1**, the harmonic mean of precision and recall.

Intervals are two-sided **Wilson score** intervals at ``confidence`` (``semcache.intervals``). F1 is
not a binomial proportion: its interval is the harmonic mean of the precision and recall bounds, a
conservative box rather than an exact interval. ``choose_threshold`` picks by the precision *lower*
bound, so a threshold measured on 40 lucky pairs does not pass for one measured on 4,000.

Nothing here imports torch until an embedding is needed: pass an embedder, or the bundled model is
loaded on first use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from semcache.errors import ArgumentTypeError, UsageError
from semcache.intervals import wilson_interval
from semcache.verifiers.base import ACCEPT, Verifier

if TYPE_CHECKING:
    import numpy as np
    from pydantic import BaseModel

    from semcache.embedding.base import Embedder

DEFAULT_THRESHOLDS = tuple(round(0.5 + 0.01 * i, 2) for i in range(51))


@dataclass(frozen=True)
class LabeledPair:
    """Two requests and whether one's answer is right for the other (1) or wrong (0)."""

    a: str
    b: str
    label: int
    kind: str = ""
    split: str = ""
    task: str = ""


@dataclass(frozen=True)
class ScoredPair(LabeledPair):
    """A labeled pair with its cosine similarity and, when a verifier ran, its verdict."""

    similarity: float = 0.0
    accepted: bool = True
    reason: str = ""
    stage: str = ""


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and rates at one threshold, with Wilson intervals."""

    threshold: float
    hits: int
    correct_hits: int
    wrong_hits: int
    positives: int
    negatives: int
    precision: float
    precision_low: float
    precision_high: float
    recall: float
    recall_low: float
    recall_high: float
    false_hit_rate: float
    false_hit_rate_low: float
    false_hit_rate_high: float
    f1: float
    f1_low: float
    f1_high: float
    verified: bool

    @property
    def hit_rate(self) -> float:
        """Share of all pairs that are served: what a cache saves, right or wrong."""
        return self.hits / max(1, self.positives + self.negatives)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hit_rate": self.hit_rate}


# -- loading ------------------------------------------------------------------------------------


def default_pairs_path() -> Path:
    """semcache's own labeled pairs (``data/pairs/pairs.jsonl`` of a source checkout)."""
    path = Path(__file__).resolve().parents[2] / "data" / "pairs" / "pairs.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: it ships with the semcache source tree")
    return path


def load_pairs(
    path: str | os.PathLike[str],
    *,
    split: str | None = None,
    kinds: Iterable[str] | None = None,
    sample: int | None = None,
) -> list[LabeledPair]:
    """Read a JSONL file of pairs: ``{"a", "b", "label"}`` with optional ``kind``, ``split``,
    ``task``. Reads our ``data/pairs/pairs.jsonl`` and the public sets' formats: STS-B's 0-5
    ``label`` is replaced by its ``label_bin`` (rows between the bins are skipped). ``split``
    and ``kinds`` keep only matching rows; ``sample`` keeps that many, evenly spaced (a quick
    look that still covers every family of a file written family by family)."""
    wanted = set(kinds) if kinds is not None else None
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                label = row["label_bin"] if "label_bin" in row else row["label"]
                a, b = row["a"], row["b"]
            except KeyError as exc:
                raise UsageError(f"{path}:{number}: a pair needs a, b and label ({exc})") from exc
            if label is None:
                continue
            if label not in (0, 1, True, False):
                raise UsageError(f"{path}:{number}: label must be 0 or 1, got {label!r}")
            pair = LabeledPair(
                a, b, int(label), row.get("kind", ""), row.get("split", ""), row.get("task", "")
            )
            if (split is None or pair.split == split) and (wanted is None or pair.kind in wanted):
                pairs.append(pair)
    if sample is not None and sample < len(pairs):
        pairs = [pairs[i * len(pairs) // sample] for i in range(sample)]
    return pairs


# -- scoring ------------------------------------------------------------------------------------


def embed_texts(
    texts: Sequence[str], embedder: Embedder | None = None, *, cache_dir: str | None = None
) -> dict[str, np.ndarray]:
    """Embed each distinct text once. With ``cache_dir``, vectors are kept in one ``.npz`` per
    embedder and set of texts, so re-running a benchmark does not re-embed 40,000 sentences."""
    import numpy as np

    if embedder is None:
        from semcache.embedding.torch_runtime import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
    unique = sorted(set(texts))
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256("\x00".join(unique).encode("utf-8")).hexdigest()[:16]
        # The name alone is not enough: torch and ONNX runtimes of one model share it, and their
        # vectors differ slightly (cosine >= 0.995); a cache of one must not answer for the other.
        runtime = str(getattr(embedder, "backend", type(embedder).__name__))
        if runtime.startswith("onnx"):  # and so do the files of two export recipes
            from semcache.embedding.onnx_export import RECIPE

            runtime += f"-r{RECIPE.split(':', 1)[0]}"
        slug = re.sub(r"[^\w.-]+", "_", f"{embedder.name}-{runtime}")
        path = Path(cache_dir) / f"{slug}-{digest}.npz"
        if path.exists():
            with np.load(path) as stored:
                return dict(zip(unique, stored["vectors"], strict=True))
    vectors = embedder.embed(unique) if unique else np.zeros((0, 1), dtype=np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, vectors=vectors)
    return dict(zip(unique, vectors, strict=True))


def similarities(
    pairs: Sequence[LabeledPair], embedder: Embedder | None = None, *, cache_dir: str | None = None
) -> list[float]:
    """The cosine similarity of each pair (the embedder's vectors are L2-normalized)."""
    vectors = embed_texts([t for p in pairs for t in (p.a, p.b)], embedder, cache_dir=cache_dir)
    return [float(vectors[p.a] @ vectors[p.b]) for p in pairs]


def score_pairs(
    pairs: Sequence[LabeledPair],
    embedder: Embedder | None = None,
    verifier: Verifier | None = None,
    *,
    cache_dir: str | None = None,
) -> list[ScoredPair]:
    """Similarity of every pair and, with ``verifier``, its verdict (asked for every pair, so one
    scoring serves every threshold; the cache only asks above its threshold)."""
    scores = similarities(pairs, embedder, cache_dir=cache_dir)
    scored = []
    for pair, similarity in zip(pairs, scores, strict=True):
        verdict = ACCEPT if verifier is None else verifier.verify(pair.a, pair.b, similarity)
        stage = "" if verdict.accept else verdict.stage or getattr(verifier, "name", "")
        scored.append(
            ScoredPair(
                **asdict(pair), similarity=similarity, accepted=verdict.accept,
                reason=verdict.reason, stage=stage,
            )
        )  # fmt: skip
    return scored


# -- operating points ---------------------------------------------------------------------------


def _hit(row: ScoredPair, threshold: float, verified: bool) -> bool:
    return row.similarity >= threshold and (row.accepted or not verified)


def _point(
    t: float, tp: int, fp: int, pos: int, neg: int, confidence: float, verified: bool
) -> OperatingPoint:
    hits = tp + fp
    precision = tp / hits if hits else 1.0  # no hit served, none wrong
    recall = tp / pos if pos else 0.0
    p_low, p_high = wilson_interval(tp, hits, confidence)
    r_low, r_high = wilson_interval(tp, pos, confidence)
    return OperatingPoint(
        t, hits, tp, fp, pos, neg,
        precision, p_low, p_high,
        recall, r_low, r_high,
        fp / neg if neg else 0.0, *wilson_interval(fp, neg, confidence),
        _harmonic(precision, recall) if tp else 0.0, _harmonic(p_low, r_low), _harmonic(p_high, r_high),
        verified,
    )  # fmt: skip


def _harmonic(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def operating_point(
    rows: Sequence[ScoredPair], threshold: float, *, verified: bool = True, confidence: float = 0.95
) -> OperatingPoint:
    """Precision, recall, false-hit rate and F1 at ``threshold``. ``verified=False`` ignores the
    verifier's vetoes (cosine alone)."""
    tp = sum(1 for r in rows if r.label == 1 and _hit(r, threshold, verified))
    fp = sum(1 for r in rows if r.label == 0 and _hit(r, threshold, verified))
    positives = sum(1 for r in rows if r.label == 1)
    return _point(threshold, tp, fp, positives, len(rows) - positives, confidence, verified)


def sweep(
    rows: Sequence[ScoredPair],
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    *,
    verified: bool = True,
    confidence: float = 0.95,
) -> list[OperatingPoint]:
    """One operating point per threshold (0.50 to 1.00 by 0.01 unless given)."""
    return [operating_point(rows, t, verified=verified, confidence=confidence) for t in thresholds]


def _candidates(
    rows: Sequence[ScoredPair], verified: bool, confidence: float = 0.95
) -> list[OperatingPoint]:
    """The operating point at every distinct similarity, from the highest down, in one pass."""
    served = sorted((r for r in rows if r.accepted or not verified), key=lambda r: -r.similarity)
    positives = sum(1 for r in rows if r.label == 1)
    negatives = len(rows) - positives
    points, tp, fp = [], 0, 0
    for i, row in enumerate(served):
        tp, fp = tp + (row.label == 1), fp + (row.label == 0)
        if i + 1 < len(served) and served[i + 1].similarity == row.similarity:
            continue  # a threshold cannot separate ties
        points.append((row.similarity, tp, fp))
    return [_point(t, a, b, positives, negatives, confidence, verified) for t, a, b in points]


def choose_threshold(
    rows: Sequence[ScoredPair],
    target_precision: float = 0.99,
    confidence: float = 0.95,
    *,
    verified: bool = True,
) -> OperatingPoint | None:
    """The lowest threshold whose precision *lower* confidence bound reaches ``target_precision``
    (the highest recall the data can vouch for), or None when no threshold does.

    Using the bound, not the point estimate, is what makes the choice safe on small label sets:
    with 0 wrong hits out of n, the 95% Wilson lower bound reaches 0.99 only from n = 381.
    """
    best = None
    for point in _candidates(rows, verified, confidence):
        if point.precision_low >= target_precision:
            best = point  # thresholds come in decreasing order: keep the lowest that qualifies
    return best


def best_precision_at_recall(
    rows: Sequence[ScoredPair], min_recall: float, *, verified: bool = True
) -> OperatingPoint | None:
    """The operating point with the highest precision among those with recall >= ``min_recall``."""
    eligible = [p for p in _candidates(rows, verified) if p.recall >= min_recall]
    return max(eligible, key=lambda p: (p.precision, p.recall), default=None)


def sweep_file(
    path: str | os.PathLike[str],
    *,
    embedder: Embedder | None = None,
    verifier: Verifier | Literal["default"] | None = "default",
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    split: str | None = None,
    confidence: float = 0.95,
) -> list[dict[str, Any]]:
    """Load a labeled JSONL file, embed it and sweep thresholds: what ``semcache tune`` prints.

    Each row has ``threshold, precision, recall, false_hit_rate, f1``, their ``_low``/``_high``
    Wilson bounds, ``hit_rate`` and the counts. Hits must pass ``verifier``: by default the one a
    ``SemanticCache`` uses, so the numbers are the cache's; None measures cosine alone.
    """
    if verifier == "default":
        from semcache.embedding.resolve import resolve_embedder
        from semcache.lifecycle import default_verifier_for

        embedder = resolve_embedder(embedder)
        verifier = default_verifier_for(embedder.name)
    rows = score_pairs(load_pairs(path, split=split), embedder, verifier)
    points = sweep(rows, thresholds, verified=verifier is not None, confidence=confidence)
    return [p.as_dict() for p in points]


# -- inspecting and applying --------------------------------------------------------------------


def vetoed(rows: Sequence[ScoredPair], threshold: float) -> list[ScoredPair]:
    """Pairs above ``threshold`` that the verifier refused (label 0: a wrong hit it prevented)."""
    return [r for r in rows if r.similarity >= threshold and not r.accepted]


def wrong_hits(
    rows: Sequence[ScoredPair], threshold: float, *, verified: bool = True
) -> list[ScoredPair]:
    """Pairs labeled 0 that would be served at ``threshold``."""
    return [r for r in rows if r.label == 0 and _hit(r, threshold, verified)]


def table(
    records: Sequence[ScoredPair | OperatingPoint | dict[str, Any]],
    columns: Sequence[str],
    *,
    digits: int = 3,
) -> str:
    """A Markdown table of ``columns`` (dataclass fields or dict keys), for notebooks and reports
    without pandas."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.{digits}f}"
        return str(value).replace("|", "\\|").replace("\n", " ⏎ ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in records:
        data = record if isinstance(record, dict) else asdict(record)
        lines.append("| " + " | ".join(cell(data.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def apply_threshold(
    cache: Any,
    threshold: float | OperatingPoint,
    *,
    response_model: type[BaseModel] | None = None,
    scope: str | None = None,
) -> float:
    """Persist a chosen threshold in ``cache`` (a ``SemanticCache``): for one response_model, one
    scope, or the whole file. Returns the value written."""
    value = threshold.threshold if isinstance(threshold, OperatingPoint) else float(threshold)
    if not hasattr(cache, "set_threshold"):
        raise ArgumentTypeError(
            f"{type(cache).__name__} cannot persist thresholds (no set_threshold)"
        )
    if response_model is not None:
        cache.set_threshold(value, response_model=response_model, source="tuning")
    elif scope is not None:
        cache.set_threshold(value, scope=scope, source="tuning")
    else:
        cache.set_threshold(value, source="tuning")
    return value
