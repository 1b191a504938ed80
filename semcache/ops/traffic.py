"""Tuning from a cache file's own traffic: what ``semcache tune DB --from-traffic`` prints.

A cache that ran with near-miss labels (on by default), shadow checks or ``mark_wrong`` holds
labels that say, per scope, how precise each threshold would have been (``semcache.calibration``).
This reads them from the store alone (a file or a PostgreSQL database; no model, no index), lays out each scope's curve on a grid of
thresholds, and says what calibration would set; ``apply=True`` writes it, logged with its
evidence, exactly as ``SemanticCache(auto_tune=True)`` would.

A file does not know the threshold its caches were constructed with: a scope's current threshold
is the one persisted for it (scope, then its response model, then the file), else the default of
the embedding model the file records (``settings.recorded_threshold``), as ``semcache query``
assumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from semcache import calibration
from semcache.calibration import Calibration, CurvePoint
from semcache.settings import recorded_threshold
from semcache.storage.base import Rows
from semcache.types import Label

GRID_STEP = 0.01


@dataclass(frozen=True)
class ScopeReport:
    """One scope: the decision and its curve at every grid threshold the labels cover."""

    decision: Calibration
    grid: tuple[CurvePoint, ...]


def current_thresholds(store: Rows, default: float | None = None) -> dict[str, float]:
    """The threshold each scope of the file is served at, by the precedence lookups apply;
    ``default`` is the caches' own (None: their model's default)."""
    if default is None:
        default = recorded_threshold(store)
    persisted = store.thresholds()
    with store.reading() as conn:
        rows = conn.execute("SELECT DISTINCT scope, schema_name FROM entries").fetchall()
    current: dict[str, float] = {}
    for scope, schema in rows:
        for target in (f"scope:{scope}", f"schema:{schema}", "default"):
            if target in persisted:
                current[str(scope)] = persisted[target]
                break
        else:
            current[str(scope)] = default
    return current


def from_traffic(
    store: Rows,
    *,
    target: float = calibration.DEFAULT_TARGET,
    confidence: float = calibration.DEFAULT_CONFIDENCE,
    apply: bool = False,
    default: float | None = None,
) -> list[ScopeReport]:
    """Every scope with labels: its curve and calibration's decision; ``apply`` persists it.
    ``default`` is the threshold the caches were made with (None: their model's default)."""
    if default is None:
        default = recorded_threshold(store)
    current = current_thresholds(store, default)
    persisted = store.thresholds()

    def current_for(scope: str) -> float:  # a scope with labels may have no entries left
        if scope in current:
            return current[scope]
        return persisted.get(f"scope:{scope}", persisted.get("default", default))

    decisions = calibration.calibrate_all(
        store,
        current_for,
        target,
        confidence=confidence,
        apply=apply,
        source="tune",
    )
    labels: dict[str, list[Label]] = {}
    for label in store.labels():
        labels.setdefault(label.scope, []).append(label)
    return [ScopeReport(d, tuple(_grid(labels[d.scope], d.current, confidence))) for d in decisions]


def _grid(labels: list[Label], current: float, confidence: float) -> list[CurvePoint]:
    """The curve at each multiple of ``GRID_STEP`` from the lowest label up, highest first."""
    low = math.floor(min(lb.similarity for lb in labels) / GRID_STEP) * GRID_STEP
    high = max(max(lb.similarity for lb in labels), current)
    count = math.ceil((high - low) / GRID_STEP - 1e-9) + 1  # up to the first step at or above high
    steps = [round(low + i * GRID_STEP, 4) for i in range(count)]
    return [calibration.point_at(labels, t, confidence) for t in reversed(steps)]


def curve_rows(reports: list[ScopeReport]) -> list[dict[str, Any]]:
    """One row per scope and grid threshold, for a table or CSV."""
    return [
        {
            "scope": r.decision.scope,
            "threshold": p.threshold,
            "served": p.served,
            "correct": p.correct,
            "precision": round(p.precision, 4),
            "precision_low": round(p.low, 4),
            "share_served": round(p.share, 4),
        }
        for r in reports
        for p in r.grid
    ]


def decision_rows(reports: list[ScopeReport]) -> list[dict[str, Any]]:
    """One row per scope: the labels, the current threshold and what calibration would set."""
    return [
        {
            "scope": d.scope,
            "labels": d.labels,
            "vetoed": d.vetoed,
            "current": round(d.current, 4),
            "proposed": None if d.proposed is None else round(d.proposed, 4),
            "action": d.action,
            "reason": d.reason,
        }
        for d in (r.decision for r in reports)
    ]
