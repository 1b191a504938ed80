"""Confidence intervals for proportions (hit precision, agreement rates).

Wilson's score interval: unlike the normal approximation it stays inside [0, 1] and behaves at
small counts and at proportions near 1, which is exactly where a cache's precision lives.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from semcache.errors import UsageError


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval for ``successes`` out of ``trials``; (0, 1) with no trials."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise UsageError(f"successes must be in [0, {trials}], got {successes}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
