"""Export and import for a cache stored in PostgreSQL, through a private SQLite copy.

The export format and its importer are written once, on SQLite (``export.py``, ``importer.py``).
A cache on PostgreSQL is exported by copying its entries, settings and thresholds from one snapshot
into a temporary SQLite file and exporting that; an export is imported into it by importing into an
empty temporary file (checksums, filters and re-embedding as for any import) and then adding the
new rows to the database, skipping exact keys it already holds. So an export moves a cache between
the engines in both directions: ``SemanticCache("cache.db").export(folder)`` then
``SemanticCache("postgresql://...").import_export(folder)``, or the other way round.

``instructor_cache`` rows (instructor's ``cache=`` table) have no table on PostgreSQL yet: an
import into PostgreSQL leaves them out and says so in the log.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcache.ops.export import ExportReport, export
from semcache.ops.importer import ImportReport, import_export
from semcache.pipeline import Front, Pipeline
from semcache.storage.sqlite import SQLiteStore

if TYPE_CHECKING:
    from semcache.storage.postgres import PostgresStore

logger = logging.getLogger("semcache")

_COPY_COLUMNS = (
    "id", "exact_key", "scope", "namespace", "model", "schema_name", "prompt", "request_json",
    "response_json", "raw_json", "usage_json", "total_tokens", "embedding", "created_at",
    "last_hit_at", "hits", "expires_at",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class _Copy:
    """The ``Front`` of a PostgreSQL cache whose rows sit in a temporary SQLite file."""

    pipeline: Pipeline
    db: SQLiteStore


def export_postgres(
    cache: Front, store: PostgresStore, folder: str | os.PathLike[str], **options: Any
) -> ExportReport:
    """``export`` for a cache on PostgreSQL (the same folder a SQLite cache writes)."""
    cache.pipeline.flush()
    with tempfile.TemporaryDirectory(prefix="semcache-export-") as tmp:
        copy = SQLiteStore(Path(tmp) / "cache.db")
        try:
            _to_sqlite(store, copy)
            return export(_Copy(cache.pipeline, copy), folder, **options)
        finally:
            copy.close()


def import_postgres(
    cache: Front, store: PostgresStore, folder: str | os.PathLike[str], **options: Any
) -> ImportReport:
    """``import_export`` into a cache on PostgreSQL; the report counts what reached it."""
    with tempfile.TemporaryDirectory(prefix="semcache-import-") as tmp:
        copy = SQLiteStore(Path(tmp) / "cache.db")
        try:
            with copy.transaction() as conn:  # the target's settings decide, as on a file
                conn.executemany(
                    "INSERT INTO settings (key, value) VALUES (?, ?)", store.settings().items()
                )
            report = import_export(folder, _Copy(cache.pipeline, copy), **options)
            conn = copy.connection()
            names = ", ".join(_COPY_COLUMNS)
            entries = (
                dict(zip(_COPY_COLUMNS, row, strict=True))
                for row in conn.execute(f"SELECT {names} FROM entries ORDER BY id")
            )
            thresholds = conn.execute(
                "SELECT target, threshold, source, updated_at FROM thresholds"
            ).fetchall()
            added, n_thresholds = store.add_rows(entries, thresholds)
            exact_only = {
                int(row[0])
                for row in conn.execute("SELECT id FROM entries WHERE embedding IS NULL")
            }
        finally:
            copy.close()
    if report.instructor_cache:
        logger.warning(
            "semcache: %d instructor_cache rows were not imported: PostgreSQL caches have no "
            "instructor_cache table yet",
            report.instructor_cache,
        )
    id_map = {old: added[tmp_id] for old, tmp_id in report.id_map.items() if tmp_id in added}
    return dataclasses.replace(
        report,
        imported=len(id_map),
        duplicates=report.duplicates + len(report.id_map) - len(id_map),
        exact_only=sum(1 for tmp_id in added if tmp_id in exact_only),
        thresholds=n_thresholds,
        id_map=id_map,
        instructor_cache=0,
    )


def _to_sqlite(store: PostgresStore, copy: SQLiteStore) -> None:
    """Copy entries (with their ids), settings and thresholds from one snapshot."""
    marks = ", ".join("?" * len(_COPY_COLUMNS))
    with store.snapshot() as snap, copy.transaction() as conn:
        conn.executemany("INSERT INTO settings (key, value) VALUES (?, ?)", snap.rows("settings"))
        conn.executemany(
            "INSERT INTO thresholds (target, threshold, source, updated_at) VALUES (?, ?, ?, ?)",
            snap.rows("thresholds"),
        )
        conn.executemany(
            f"INSERT INTO entries ({', '.join(_COPY_COLUMNS)}) VALUES ({marks})",
            snap.rows("entries"),
        )
