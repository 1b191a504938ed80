"""Near-miss labels: free answers to "would a hit have been right?" just below the threshold.

When a request misses and the nearest candidate of its scope lies within ``band`` below the
threshold (or at or above it, but vetoed), the provider is about to answer the request anyway.
Comparing that answer with the candidate's stored one, field by field, says whether serving the
candidate would have been right, without any extra provider call. These labels are what lets a
threshold come *down* safely (``semcache.calibration``); shadow checks only see above it.

The calling thread pays for two dictionary operations: the lookup remembers the candidate under
the request's exact key, and the store of the provider's answer moves it to a queue. Keying by the
exact key, not by the plan, is what makes ``cache.lookup`` followed by ``cache.store`` (two plans
for one request) label as the wrapped client and ``memoize`` do. The verifier's verdict on a
candidate below the threshold and the comparison of the answers wait for the next flush of the
bookkeeping, which already runs about once a second off the request's critical path, and the
labels then go through the ledger into the ``near_misses`` table.

A hit also needs answer agreement (``semcache.verifiers.agreement``): at a threshold low enough to
serve the candidate, a slightly less similar candidate holding another answer would be eligible too,
and the cache would serve neither. So a label keeps the similarity of the nearest such rival
(``rival``); calibration counts the label as served only at thresholds above it, where the rival
is not eligible. Without that, labels in the band judged candidates the cache would refuse, and
auto-tuning stayed too cautious to lower a threshold (``benchmarks/results/autotune.md``).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from semcache.answers import differing_fields
from semcache.types import StoredEntry
from semcache.verifiers.agreement import ANOTHER_INSTANCE, decisive, disagrees
from semcache.verifiers.base import Verifier
from semcache.verifiers.schema_terms import judge

# How far below the threshold labels are taken by default. Wide enough that one band holds the
# thresholds calibration would consider next (MiniLM's right and wrong pairs overlap over about
# 0.80-0.95), narrow enough that the labels are about hits the cache could plausibly serve: a
# candidate 0.2 below says little about the threshold. Each label costs a row (bounded like the
# audit log) and no provider call, so labels are on by default.
DEFAULT_BAND = 0.05

# A request rarely waits this long for its answer; older notes are dropped instead of labelled.
MAX_AGE = 600.0
CAPACITY = 4096  # requests awaiting an answer; the oldest are forgotten beyond this


@dataclass(frozen=True)
class NearMiss:
    """The nearest candidate of a request that missed, waiting for the provider's answer."""

    scope: str
    entry_id: int
    similarity: float
    threshold: float
    stage: str | None  # the check that vetoed it; None: below the threshold, not judged yet
    query: str
    candidate: str
    candidate_json: str
    noted_at: float
    # The response model when its words are evidence (``schema_evidence``), judged as a hit is.
    model: type[BaseModel] | None = None
    # Less similar candidates within the agreement margin, best first, as (similarity, prompt,
    # answer JSON): the first holding another answer and not vetoed as another instance of the
    # request is the rival, found at the flush (``_rival``).
    rivals: tuple[tuple[float, str, str], ...] = ()


def nearest(
    scored: Sequence[tuple[float, StoredEntry]],
    threshold: float,
    band: float,
    stages: Mapping[int, str],
    query: str,
    model: type[BaseModel] | None = None,
    margin: float | None = None,
) -> NearMiss | None:
    """The nearest candidate of a miss, when it is within ``band`` below ``threshold`` (or above
    it and refused, with the stage that refused it in ``stages``); None otherwise. ``margin`` is
    the cache's agreement margin (None: no answer agreement, so no rivals)."""
    if not scored:
        return None
    similarity, row = scored[0]
    if similarity < threshold - band or row.prompt is None:
        return None
    stage = stages.get(row.id) if similarity >= threshold else None
    if similarity >= threshold and stage is None:
        return None  # not refused by a check (a stale answer): nothing to learn
    rivals: tuple[tuple[float, str, str], ...] = ()
    if margin is not None and stage is None:  # answers are compared at the flush, not here
        rivals = tuple(
            (other_similarity, other.prompt, other.response_json)
            for other_similarity, other in scored[1:]
            if other.prompt is not None and other_similarity >= similarity - margin
        )
    return NearMiss(
        row.scope, row.id, similarity, threshold, stage, query, row.prompt, row.response_json,
        time.monotonic(), model, rivals,
    )  # fmt: skip


class NearMisses:
    """Near misses waiting for their answer, and answered ones waiting for the next flush."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: OrderedDict[str, NearMiss] = OrderedDict()
        self._answered: list[tuple[NearMiss, str, float]] = []

    def note(self, exact_key: str, near: NearMiss) -> None:
        with self._lock:
            self._waiting[exact_key] = near
            self._waiting.move_to_end(exact_key)
            if len(self._waiting) > CAPACITY:
                self._waiting.popitem(last=False)

    def answered(self, exact_key: str, answer_json: str) -> None:
        """The provider's answer to a request was stored: queue its label, if it had a near miss."""
        if not self._waiting:  # the common case costs one attribute read
            return
        with self._lock:
            near = self._waiting.pop(exact_key, None)
            if near is not None and time.monotonic() - near.noted_at <= MAX_AGE:
                self._answered.append((near, answer_json, time.time()))

    def drain(self, verifier: Verifier) -> list[tuple[Any, ...]]:
        """Rows for the ``near_misses`` table, one per answered near miss; a candidate below the
        threshold gets ``verifier``'s verdict now (stage "" when it would have been served)."""
        with self._lock:
            answered, self._answered = self._answered, []
        rows = []
        for near, answer_json, at in answered:
            try:
                differing = differing_fields(near.candidate_json, answer_json)
                stage = near.stage if near.stage is not None else _stage(verifier, near)
                rival = _rival(verifier, near) if not stage else None
            except Exception:  # an unreadable row or a failing verifier loses one label only
                continue
            rows.append((
                at, near.scope, near.entry_id, near.similarity, near.threshold, stage,
                int(not differing), json.dumps(differing), near.query, near.candidate,
                answer_json, near.candidate_json, rival,
            ))  # fmt: skip
        return rows


def _rival(verifier: Verifier, near: NearMiss) -> float | None:
    """The similarity of the rival that answer agreement would weigh against the candidate, as
    ``find_rival`` does for a hit: a candidate holding another decisive answer, unless vetoed as
    another instance of the request (another order number, date, ...)."""
    chosen = (near.similarity, decisive(near.candidate_json))
    for similarity, prompt, answer_json in near.rivals:
        # The margin was applied when the near miss was noted; only the answers are left.
        if not disagrees(chosen, (similarity, decisive(answer_json)), float("inf")):
            continue  # the same answer, or one that cannot be compared
        verdict = judge(verifier, near.query, prompt, similarity, near.model)
        if verdict.accept or verdict.stage not in ANOTHER_INSTANCE:
            return similarity
    return None


def _stage(verifier: Verifier, near: NearMiss) -> str:
    """The verdict a lookup would have reached at a lower threshold: the verifier's, then the
    response model's words (``semcache.verifiers.schema_terms``); feedback is not consulted."""
    verdict = judge(verifier, near.query, near.candidate, near.similarity, near.model)
    return "" if verdict.accept else (verdict.stage or verifier.name)
