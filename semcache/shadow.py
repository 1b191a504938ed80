"""Shadow verification: re-ask the provider for a sample of semantic hits and compare answers.

Because answers are structured, "was that hit right?" has a mechanical answer: the fresh answer's
fields either equal the cached ones or they do not. Sampling a fraction of semantic hits gives a
live estimate of each scope's hit precision, with a Wilson interval, and lets the cache raise a
scope's threshold when it is confidently below the user's target.
"""

from __future__ import annotations

import logging
import random

from pydantic import BaseModel

from semcache.answers import differing_fields
from semcache.errors import UsageError
from semcache.intervals import wilson_interval
from semcache.storage.base import Store
from semcache.types import CacheHit, PrecisionEstimate

logger = logging.getLogger("semcache")

_STEP = 1e-4  # a tightened threshold sits just above the most similar disagreeing hit


class Shadow:
    """Sampling, recording and the tightening rule for one cache file."""

    def __init__(self, store: Store, rate: float, target: float | None, seed: int | None = None):
        if not 0.0 <= rate <= 1.0:
            raise UsageError(f"shadow_rate is a fraction in [0, 1], got {rate}")
        if target is not None and not 0.0 < target <= 1.0:
            raise UsageError(f"shadow_target is a precision in (0, 1], got {target}")
        self.rate, self.target = rate, target
        self._store = store
        self._random = random.Random(seed)

    def sample(self, hit: CacheHit | None) -> bool:
        """Whether to re-ask the provider for this hit (semantic hits only)."""
        return hit is not None and hit.tier == "semantic" and self._random.random() < self.rate

    def record(self, hit: CacheHit, fresh: BaseModel) -> tuple[bool, float | None]:
        """Compare field by field and store the outcome.

        Returns ``(agree, new threshold)``; the threshold is set when the scope's precision is
        confidently (upper bound of the interval) below the target.
        """
        differing = differing_fields(hit.value, fresh)
        agree = not differing
        self._store.add_shadow(hit.scope, hit.entry_id, hit.similarity, agree, differing)
        return agree, (self._tightened(hit.scope) if self.target is not None else None)

    def estimates(self) -> dict[str, PrecisionEstimate]:
        out = {}
        for scope, (n, agreements, _) in self._store.shadow_counts().items():
            low, high = wilson_interval(agreements, n)
            out[scope] = PrecisionEstimate(n, agreements, agreements / n, low, high)
        return out

    def _tightened(self, scope: str) -> float | None:
        n, agreements, worst = self._store.shadow_counts().get(scope, (0, 0, None))
        _, high = wilson_interval(agreements, n)
        if worst is None or self.target is None or high >= self.target:
            return None
        current = self._store.thresholds().get(f"scope:{scope}", -1.0)
        proposed = min(1.0, worst + _STEP)
        if proposed <= current:
            return None
        self._store.set_threshold(f"scope:{scope}", proposed, "shadow")
        logger.warning(
            "semcache: scope %s precision %d/%d is below %.3f; threshold raised to %.4f",
            scope[:12], agreements, n, self.target, proposed,
        )  # fmt: skip
        return proposed
