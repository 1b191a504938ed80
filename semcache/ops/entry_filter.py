"""Which entries a maintenance call applies to: ``EntryFilter`` and the ages it is given in.

``ls``, ``prune`` and ``query`` select entries with the same criteria (scope prefix, namespace,
schema, model, age, never hit, TTL passed), and the CLI spells ages as ``7d`` or ``12h``. The
criteria become one parameterized SQL condition here, written once for SQLite and PostgreSQL, so
what ``ls`` lists is exactly what ``prune`` with the same options deletes. It is apart from
``semcache.ops.admin`` because it is a value the commands build from their options, with no
store of its own: the functions that read and delete rows take it as an argument.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from semcache.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


@dataclass(frozen=True)
class EntryFilter:
    """Which entries a listing or a prune applies to; every field given must match.

    ``scope`` may be a prefix of the scope hash (``ls`` shows the first 12 characters).
    ``older_than``/``newer_than`` are ages in seconds, measured from ``created_at``. ``expired``
    needs an ``expires_at`` column (epoch seconds) and selects rows whose TTL has passed.
    """

    scope: str | None = None
    namespace: str | None = None
    schema_name: str | None = None
    model: str | None = None
    older_than: float | None = None
    newer_than: float | None = None
    never_hit: bool = False
    expired: bool = False

    def is_empty(self) -> bool:
        return self == EntryFilter()

    def where(self, columns: list[str], now: float | None = None) -> tuple[str, list[Any]]:
        """A SQL condition and its parameters; ``"true"`` when nothing is filtered."""
        now = time.time() if now is None else now
        parts: list[str] = []
        params: list[Any] = []
        if self.scope:
            parts.append("substr(scope, 1, length(?)) = ?")
            params += [self.scope, self.scope]
        for column in ("namespace", "schema_name", "model"):
            value = getattr(self, column)
            if value is not None:
                parts.append(f"{column} = ?")
                params.append(value)
        if self.older_than is not None:
            parts.append("created_at < ?")
            params.append(now - self.older_than)
        if self.newer_than is not None:
            parts.append("created_at >= ?")
            params.append(now - self.newer_than)
        if self.never_hit:
            parts.append("hits = 0")
        if self.expired:
            if "expires_at" not in columns:
                raise UsageError("this cache file has no expires_at column, so nothing has a TTL")
            parts.append("expires_at IS NOT NULL AND expires_at <= ?")
            params.append(now)
        return (" AND ".join(parts) or "true"), params


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"2w"``."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"not a duration: {text!r} (use a number with s, m, h, d or w)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
