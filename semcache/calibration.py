"""Per-scope thresholds calibrated on live labels: the lowest one whose precision meets a target.

A scope's labels (``semcache.types.Label``) are near misses below its threshold, shadow checks and
``mark_wrong`` feedback above it. Counting the labels at or above a threshold ``t`` that no check
vetoed gives the precision a cache serving from ``t`` would have had on that traffic, with a
two-sided Wilson interval at ``confidence`` (``semcache.intervals``). Then, per scope:

* **lower** to the lowest ``t`` whose precision *lower* bound reaches the target: the labels vouch
  for it (with 0 wrong out of n, a 95% lower bound reaches 0.99 only from n = 381), and at least
  ``min_labels`` labels were seen;
* **raise** when the precision *upper* bound at the current threshold is below the target: the
  labels say it is too low with that confidence. The new threshold is the lowest above the
  current one that meets the target as above, else the lowest above it whose upper bound reaches
  the target (the smallest raise the evidence demands: labels gathered there decide the next
  step), else one just above the most similar wrong label;
* otherwise **keep** it: not enough evidence either way, and changes smaller than ``min_change``
  are not worth a write.

Labels come from where the threshold *was*: near misses from the band below it, shadow checks from
above it. After a threshold comes down, the labels gathered below it stay (until the retention of
the ``near_misses`` table drops them) and new ones come from the new band, so the evidence follows
the threshold down, one band at a time, only as far as the traffic supports. Near misses are a
census of the band (every one is labelled) while shadow checks are a sample, so a curve mixing
both weighs the band below more than the hits above; ``mark_wrong`` adds only wrong labels, which
can only push a threshold up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from semcache.intervals import wilson_interval
from semcache.storage.base import Store
from semcache.types import Label

DEFAULT_TARGET = 0.99
DEFAULT_CONFIDENCE = 0.95
MIN_LABELS = 50  # before a threshold comes down, whatever the bounds say
MIN_CHANGE = 0.005  # a smaller move is noise, not worth a write and a log row
_STEP = 1e-4  # a raised threshold sits just above the most similar wrong label


@dataclass(frozen=True)
class CurvePoint:
    """What serving from ``threshold`` would have done on the labels: ``served`` of ``labels``
    (vetoed ones included) at or above it, ``correct`` of those right, Wilson bounds."""

    threshold: float
    served: int
    correct: int
    labels: int
    precision: float
    low: float
    high: float

    @property
    def share(self) -> float:
        """Share of the labelled requests served: a hit rate among near misses, not of traffic."""
        return self.served / self.labels if self.labels else 0.0


@dataclass(frozen=True)
class Calibration:
    """One scope's decision: ``proposed`` is the new threshold, or None to keep ``current``."""

    scope: str
    current: float
    proposed: float | None
    action: str  # "lower", "raise" or "keep"
    reason: str
    labels: int
    vetoed: int
    target: float
    confidence: float
    at_proposed: CurvePoint | None
    curve: tuple[CurvePoint, ...]

    def evidence(self) -> dict[str, Any]:
        """What a threshold change is logged with (``threshold_changes.evidence``)."""
        point = asdict(self.at_proposed) if self.at_proposed else {}
        return {
            "from": self.current, "labels": self.labels, "vetoed": self.vetoed,
            "target": self.target,
            "confidence": self.confidence, "reason": self.reason,
            **{k: point[k] for k in ("served", "correct", "precision", "low", "high") if point},
        }  # fmt: skip


def curve(labels: Iterable[Label], confidence: float = DEFAULT_CONFIDENCE) -> list[CurvePoint]:
    """The point at every distinct similarity of the unvetoed labels, highest first.

    A label is served at ``t`` when its similarity is at least ``t`` and its rival, if any, is
    below ``t`` (``Label.served_at``; a rival is never more similar than its label). So the
    labels served at ``t`` are those reaching ``t`` less those whose rival reaches it: two sorted
    sweeps instead of one pass per threshold.
    """
    labels = list(labels)
    unvetoed = [lb for lb in labels if not lb.stage]
    served = sorted(unvetoed, key=lambda lb: -lb.similarity)
    rivals = sorted(
        ((lb.rival, lb.correct) for lb in unvetoed if lb.rival is not None), key=lambda r: -r[0]
    )
    points, reached, correct, r, refused, refused_correct = [], 0, 0, 0, 0, 0
    for i, label in enumerate(served):
        reached, correct = reached + 1, correct + label.correct
        if i + 1 < len(served) and served[i + 1].similarity == label.similarity:
            continue  # a threshold cannot separate ties
        while r < len(rivals) and rivals[r][0] >= label.similarity:
            refused, refused_correct = refused + 1, refused_correct + rivals[r][1]
            r += 1
        points.append(
            _point(
                label.similarity, reached - refused, correct - refused_correct, len(labels),
                confidence,
            )
        )  # fmt: skip
    return points


def point_at(
    labels: Sequence[Label], threshold: float, confidence: float = DEFAULT_CONFIDENCE
) -> CurvePoint:
    """The point at ``threshold`` (any value, not only a label's similarity)."""
    served = [lb for lb in labels if lb.served_at(threshold)]
    correct = sum(lb.correct for lb in served)
    return _point(threshold, len(served), correct, len(labels), confidence)


def _point(t: float, served: int, correct: int, labels: int, confidence: float) -> CurvePoint:
    low, high = wilson_interval(correct, served, confidence)
    return CurvePoint(t, served, correct, labels, correct / served if served else 1.0, low, high)


def calibrate(
    scope: str,
    labels: Sequence[Label],
    current: float,
    target: float = DEFAULT_TARGET,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_labels: int = MIN_LABELS,
    min_change: float = MIN_CHANGE,
) -> Calibration:
    """The decision for one scope (module docstring)."""
    points = curve(labels, confidence)
    usable = sum(1 for lb in labels if not lb.stage)
    qualifying = [p for p in points if p.low >= target]
    lowest = qualifying[-1] if qualifying else None  # points run from the highest down
    here = point_at(labels, current, confidence)

    def decide(action: str, proposed: float | None, reason: str) -> Calibration:
        at = None if proposed is None else point_at(labels, proposed, confidence)
        return Calibration(
            scope, current, proposed, action, reason, usable, len(labels) - usable, target,
            confidence, at, tuple(points),
        )  # fmt: skip

    if here.served and here.high < target:
        wrong = [lb.similarity for lb in labels if not lb.stage and not lb.correct]
        plausible = [p for p in points if p.threshold > current and p.high >= target]
        if lowest is not None and lowest.threshold > current:
            proposed = lowest.threshold
        elif plausible:
            proposed = plausible[-1].threshold
        else:
            proposed = min(1.0, max(wrong) + _STEP)
        if proposed > current:
            return decide(
                "raise", proposed,
                f"precision at {current:.4f} is at most {here.high:.4f} "
                f"({here.correct}/{here.served}), below {target}",
            )  # fmt: skip
    if lowest is not None and lowest.threshold <= current - min_change:
        if usable < min_labels:
            return decide("keep", None, f"{usable} labels, fewer than {min_labels}")
        return decide(
            "lower", lowest.threshold,
            f"precision at {lowest.threshold:.4f} is at least {lowest.low:.4f} "
            f"({lowest.correct}/{lowest.served}), meeting {target}",
        )  # fmt: skip
    return decide("keep", None, "not enough evidence to move it" if lowest is None else "in place")


def calibrate_all(
    store: Store,
    current_for: Callable[[str], float],
    target: float = DEFAULT_TARGET,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    min_labels: int = MIN_LABELS,
    apply: bool = False,
    source: str = "auto",
) -> list[Calibration]:
    """Calibrate every scope with labels; with ``apply``, persist each proposed threshold as the
    scope's (``scope:…``), logged with its evidence. ``current_for(scope)`` is the threshold the
    cache applies to the scope now."""
    by_scope: dict[str, list[Label]] = {}
    for label in store.labels():
        by_scope.setdefault(label.scope, []).append(label)
    decisions = []
    for scope in sorted(by_scope):
        decision = calibrate(
            scope, by_scope[scope], current_for(scope), target,
            confidence=confidence, min_labels=min_labels,
        )  # fmt: skip
        if apply and decision.proposed is not None:
            store.set_threshold(f"scope:{scope}", decision.proposed, source, decision.evidence())
        decisions.append(decision)
    return decisions
