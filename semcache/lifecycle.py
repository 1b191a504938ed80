"""Small pieces of a cache's life that are not lookups: argument checks (threshold, ttl, size), periodic maintenance
timers, the default verifier, and closing caches a program forgot to close (so buffered hit counts
reach the file at exit)."""

from __future__ import annotations

import atexit
import contextlib
import math
import time
import weakref
from typing import Any

from pydantic import BaseModel

from semcache.errors import UsageError
from semcache.keys import schema_fingerprint
from semcache.verifiers.base import AcceptAll, Verifier

# How often (seconds) each periodic job may run; checked on the lookup path, so the check is cheap.
# "tune" is auto_tune's calibration when too few new labels arrived to trigger it sooner.
_PERIODS = {"expire": 30.0, "audit": 300.0, "save_index": 60.0, "tune": 600.0}


def check_threshold(threshold: float) -> float:
    """A threshold is a cosine similarity: a real number in [-1, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise UsageError(f"threshold must be a number, got {type(threshold).__name__}")
    if not -1.0 <= threshold <= 1.0:  # also refuses NaN
        raise UsageError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    return float(threshold)


def check_ttl(ttl: float | None) -> float | None:
    """A lifetime is a positive, finite number of seconds, or None for "never expires"."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl):
        raise UsageError(f"ttl must be a number of seconds, got {ttl!r}")
    if ttl <= 0:
        raise UsageError(f"ttl must be positive, got {ttl}")
    return float(ttl)


def check_max_entries(max_entries: int | None) -> int | None:
    if max_entries is None:
        return None
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise UsageError(f"max_entries must be a positive integer, got {max_entries!r}")
    return max_entries


def default_verifier_for(model_name: str) -> Verifier:
    """The built-in verifier for a cache embedding with ``model_name``: the rules, their
    substitution check gated on that model's scale (``embedding.resolve.substitution_gate``)."""
    from semcache.embedding.resolve import substitution_gate
    from semcache.verifiers import default_verifier

    gate = substitution_gate(model_name)
    return default_verifier() if gate is None else default_verifier(substitution_below=gate)


def resolve_verifier(verifier: Any) -> Verifier:
    """The ``verifier=`` argument other than the built-in default: None for no verification, or
    a Verifier (the default depends on the embedding model: ``default_verifier_for``)."""
    if verifier is None:
        return AcceptAll()
    if not isinstance(verifier, Verifier):
        raise UsageError(
            "verifier must have a name and a verify(query, candidate, similarity) method; "
            f"got {type(verifier).__name__}"
        )
    return verifier


def threshold_target(response_model: type[BaseModel] | None, scope: str | None) -> str:
    """Where a persisted threshold applies: one scope, one response_model, or the whole file."""
    if response_model is not None and scope is not None:
        raise UsageError("give response_model or scope, not both")
    if scope is not None:
        return f"scope:{scope}"
    if response_model is not None:
        return f"schema:{schema_fingerprint(response_model)[1]}"
    return "default"


class Maintenance:
    """Timers for periodic jobs, so each runs at most once per its period."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def due(self, job: str) -> bool:
        """True on a job's first call, then once per its period. The monotonic clock counts from
        an arbitrary point (the machine's boot on Linux), so "never run" is not time zero: a
        process started minutes after boot would otherwise wait out the rest of the period."""
        now = time.monotonic()
        last = self._last.get(job)
        if last is not None and now - last < _PERIODS[job]:
            return False
        self._last[job] = now
        return True


_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


def track(cache: Any) -> None:
    _OPEN.add(cache)


def untrack(cache: Any) -> None:
    _OPEN.discard(cache)


@atexit.register
def _close_open_caches() -> None:
    """Write buffered bookkeeping of caches the program never closed."""
    for cache in list(_OPEN):
        with contextlib.suppress(Exception):
            cache.close()
