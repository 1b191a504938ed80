"""Maintenance SQL on PostgreSQL: the statements ``semcache.ops`` writes once for both engines.

Maintenance code (``check``, ``prune``, the command line, instructor's ``cache=`` adapter) is
written with SQLite's ``?`` placeholders in SQL both engines accept. ``QmarkConnection`` wraps a
psycopg connection and turns each ``?`` outside a quoted literal into psycopg's ``%s`` (and a
literal ``%`` into ``%%``), so those statements run here unchanged and stay parameterized.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """``sql`` with ``?`` placeholders as ``%s`` (quoted literals and identifiers untouched)."""
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if quote is not None:
            out.append("%%" if char == "%" else char)
            if char == quote:
                quote = None
        elif char in ("'", '"'):
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


class QmarkConnection:
    """A psycopg connection that takes ``?`` placeholders (``semcache.storage.base.Connection``)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Any:
        if not parameters:  # psycopg leaves a statement without parameters as it is
            return self._conn.execute(sql)
        return self._conn.execute(translate(sql), list(parameters))
