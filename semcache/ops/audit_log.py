"""Reading the decision logs of a cache file, newest first: what ``semcache log`` prints.

``audit`` holds one row per semantic decision of a ``SemanticCache(audit=True)`` (the query, the
entry it matched, the similarity, the verdict and why, the latency); ``vetoes`` holds every
candidate a verifier or recorded feedback refused, audit or not. Read-only; the store alone
(a SQLite file or a PostgreSQL database).
"""

from __future__ import annotations

import time
from typing import Any

from semcache.errors import UsageError
from semcache.storage.base import Rows

VERDICTS = ("hit", "veto", "below_threshold")

_AUDIT_COLUMNS = (
    "id, created_at, scope, query, entry_id, matched_prompt, similarity, verdict, reason, "
    "latency_ms"
)
_VETO_COLUMNS = "id, created_at, scope, entry_id, query, candidate, similarity, stage, reason"


def audit_rows(
    store: Rows,
    *,
    verdict: str | None = None,
    since: float | None = None,
    scope: str | None = None,
    limit: int | None = 50,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Rows of the audit log, newest first.

    ``verdict`` is ``hit``, ``veto`` or ``below_threshold``; ``since`` keeps the rows of the last
    that many seconds; ``scope`` is a scope hash or a prefix of it; ``limit=None`` returns all.
    ``created_at`` is in epoch seconds.
    """
    if verdict is not None and verdict not in VERDICTS:
        raise UsageError(f"verdict must be one of {', '.join(VERDICTS)}, not {verdict!r}")
    extra = [("verdict = ?", verdict)] if verdict is not None else []
    return _rows(store, "audit", _AUDIT_COLUMNS, extra, since, scope, limit, now)


def veto_rows(
    store: Rows,
    *,
    since: float | None = None,
    scope: str | None = None,
    limit: int | None = 50,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Rows of the veto log (both texts, similarity, the stage that vetoed and why), newest
    first; the filters are those of ``audit_rows``."""
    return _rows(store, "vetoes", _VETO_COLUMNS, [], since, scope, limit, now)


def _rows(
    store: Rows,
    table: str,
    columns: str,
    conditions: list[tuple[str, Any]],
    since: float | None,
    scope: str | None,
    limit: int | None,
    now: float | None,
) -> list[dict[str, Any]]:
    if limit is not None and limit < 0:
        raise UsageError(f"limit must be 0 or more, not {limit}")
    if since is not None:
        conditions.append(("created_at >= ?", (time.time() if now is None else now) - since))
    where = [sql for sql, _ in conditions]
    params = [value for _, value in conditions]
    if scope:
        where.append("substr(scope, 1, length(?)) = ?")
        params += [scope, scope]
    sql = f"SELECT {columns} FROM {table} WHERE {' AND '.join(where) or 'true'}"
    sql += " ORDER BY created_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    with store.reading() as conn:
        cursor = conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
