"""Plain data types shared by every layer: what a lookup returns and what stats report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Tier = Literal["exact", "semantic"]


@dataclass(frozen=True)
class CacheHit:
    """A cached answer served instead of a provider call.

    ``value`` is an instance of the *current* response_model, validated from the stored JSON;
    ``completion`` is the stored raw completion restored as nested ``SimpleNamespace`` (or None when
    none was stored). ``similarity`` is the cosine similarity in [-1, 1] between the query's text and
    ``matched_prompt`` (1.0 for an exact hit).
    """

    # Not compared: the value carries its hit (``cache_hit``), so comparing would recurse.
    value: Any = field(compare=False)
    completion: Any = field(compare=False)
    similarity: float
    tier: Tier
    entry_id: int
    matched_prompt: str | None
    query: str | None = None  # the text that was looked up (None when exact-only)
    scope: str = ""
    tokens: int = 0  # the stored completion's total tokens: what this hit saved


@dataclass(frozen=True)
class PrecisionEstimate:
    """Live precision of one scope's semantic hits, from shadow verification.

    ``samples`` semantic hits were re-asked of the provider in the background; ``agreements`` of
    them returned the same structured answer. ``low``/``high`` bound the precision (Wilson, 95%).
    """

    samples: int
    agreements: int
    precision: float
    low: float
    high: float


@dataclass(frozen=True)
class Label:
    """One live verdict on "would serving this candidate have been right?".

    ``source`` is ``near_miss`` (a candidate just below the threshold compared with the answer the
    provider gave instead), ``shadow`` (a served hit re-asked of the provider) or ``feedback`` (a
    served hit marked wrong). ``stage`` names the check that vetoed the candidate, "" when none
    did: only unvetoed labels say what a threshold would serve. ``rival`` (near misses only) is
    the similarity of a less similar candidate holding another answer: at a threshold at or below
    it, answer agreement would refuse the candidate, so the label counts only above it.
    """

    scope: str
    similarity: float
    correct: bool
    source: str
    stage: str = ""
    created_at: float = 0.0
    rival: float | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Label:
        """A label from a row of the stores' label query: (scope, similarity, agree, source,
        stage, created_at, rival)."""
        scope, similarity, agree, source, stage, created_at, rival = row
        return cls(
            str(scope), float(similarity), bool(agree), str(source), str(stage),
            float(created_at), None if rival is None else float(rival),
        )  # fmt: skip

    def served_at(self, threshold: float) -> bool:
        """Whether the cache would have served the candidate at ``threshold``."""
        return (
            not self.stage
            and self.similarity >= threshold
            and (self.rival is None or self.rival < threshold)
        )


@dataclass(frozen=True)
class ThresholdChange:
    """One change of a persisted threshold: who made it, from what to what, and on what evidence
    (for calibration: the labels counted and the precision bounds at the new threshold)."""

    created_at: float
    target: str
    old: float | None
    new: float | None
    source: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CacheStats:
    """Totals since the cache file was created, across every process that used it."""

    entries: int
    exact_hits: int
    semantic_hits: int
    misses: int
    calls_avoided: int
    tokens_avoided: int
    semantic_precision: dict[str, PrecisionEstimate] = field(default_factory=dict)  # by scope
    threshold_changes: tuple[ThresholdChange, ...] = ()  # the most recent, newest first
    # Times this process lost its database server (PostgreSQL); not summed across processes.
    store_outages: int = 0

    @property
    def hit_rate(self) -> float:
        """Hits over lookups; 0.0 before the first lookup."""
        lookups = self.exact_hits + self.semantic_hits + self.misses
        return (self.exact_hits + self.semantic_hits) / lookups if lookups else 0.0


@dataclass(frozen=True)
class StoredEntry:
    """One row of the entries table, as the cache needs it to serve a hit."""

    id: int
    exact_key: str
    scope: str
    prompt: str | None
    response_json: str
    raw_json: str | None
    total_tokens: int
    embedding: bytes | None = None
