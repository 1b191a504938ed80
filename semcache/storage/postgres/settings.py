"""The ``settings`` table on PostgreSQL: what a cache was created with, recorded by the first node
that opens it and compared by every node after it (``semcache.storage.sqlite`` on SQLite).

Separate from ``migrations.py``, which answers whether this semcache can read the tables at all:
settings answer whether the vectors in them can be mixed with this node's (same embedding model,
dimension, format version). A mismatch is refused with an error naming the setting, never
worked around, since vectors of two models side by side give wrong hits, not errors.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from semcache.errors import ConfigMismatchError
from semcache.storage.schema import FORMAT_VERSION


def read(conn: Any) -> dict[str, str]:
    """Every setting the database holds."""
    rows = conn.execute("SELECT key, value FROM settings").fetchall()
    return {str(k): str(v) for k, v in rows}


def record(conn: Any, expected: Mapping[str, str]) -> dict[str, str]:
    """Record ``expected`` (and the format version, creation time and database id) where the
    database lacks them, in the caller's transaction; returns what the database holds then.

    Two nodes may open a new database at once: each inserts what is missing and keeps what is
    there, then reads the table again, so the loser of the race sees the winner's settings (and
    ``compare`` refuses them if they differ).
    """
    missing = {
        "format_version": str(FORMAT_VERSION),
        "created_at": str(time.time()),
        "database_id": uuid.uuid4().hex,
    }
    missing.update(expected)
    stored = read(conn)
    if not all(key in stored for key in missing):
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO settings (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
                list(missing.items()),
            )
        stored = read(conn)
    return stored


def compare(stored: Mapping[str, str], expected: Mapping[str, str]) -> None:
    """Refuse a database whose format version or settings differ from ``expected``."""
    version = stored.get("format_version")
    if version != str(FORMAT_VERSION):
        raise ConfigMismatchError(
            f"the database has format version {version}; this semcache reads {FORMAT_VERSION}"
        )
    for key, value in expected.items():
        if stored.get(key) != value:
            raise ConfigMismatchError(
                f"the database was created with {key}={stored.get(key)!r}, not {value!r}: "
                "open it with the same embedder, or use another database or schema"
            )
