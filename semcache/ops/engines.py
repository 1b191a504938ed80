"""Export and import for a cache stored in PostgreSQL, through a private SQLite copy.

The export format and its importer are written once, on SQLite (``export.py``, ``importer.py``).
A cache on PostgreSQL is exported by copying its entries, settings and thresholds from one snapshot
into a temporary SQLite file and exporting that; an export is imported into it by importing into an
empty temporary file (checksums, filters and re-embedding as for any import) and then adding the
new rows to the database, skipping exact keys it already holds. So an export moves a cache between
the engines in both directions: ``SemanticCache("cache.db").export(folder)`` then
``SemanticCache("postgresql://...").import_export(folder)``, or the other way round.

``instructor_cache`` rows (instructor's ``cache=`` table) travel too, in both directions: the copy
carries them, and an import adds those whose key the database lacks.

``export_cache`` and ``import_cache`` are ``SemanticCache.export`` and ``.import_export``: they
take the way of the cache's engine, so the facade need not tell the engines apart to export.
``export_store`` exports a store of either engine without a ``SemanticCache`` (the command line
opens no model to export).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from semcache.ops.export import ExportReport, export
from semcache.ops.importer import ImportReport, import_export
from semcache.pipeline import Front, Pipeline
from semcache.storage import instructor_table
from semcache.storage.base import Store
from semcache.storage.sqlite import SQLiteStore

if TYPE_CHECKING:
    from semcache.storage.postgres import PostgresStore

_COPY_COLUMNS = (
    "id", "exact_key", "scope", "namespace", "model", "schema_name", "prompt", "request_json",
    "response_json", "raw_json", "usage_json", "total_tokens", "embedding", "created_at",
    "last_hit_at", "hits", "expires_at",
)  # fmt: skip


_INSTRUCTOR_COLUMNS = ("key", "value", "created_at", "expires_at", "hits")


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
    return _export_copy(store, folder, cache.pipeline, **options)


def export_cache(cache: Front, folder: str | os.PathLike[str], **options: Any) -> ExportReport:
    """``SemanticCache.export`` on either engine (pending bookkeeping is written first)."""
    cache.pipeline.flush()
    store = cache.pipeline.store
    if not isinstance(store, SQLiteStore):
        return export_postgres(cache, cast("PostgresStore", store), folder, **options)
    return export(cache, folder, **options)


def import_cache(cache: Front, folder: str | os.PathLike[str], **options: Any) -> ImportReport:
    """``SemanticCache.import_export`` on either engine."""
    store = cache.pipeline.store
    if not isinstance(store, SQLiteStore):
        return import_postgres(cache, cast("PostgresStore", store), folder, **options)
    return import_export(folder, cache, **options)


def export_store(store: Store, folder: str | os.PathLike[str], **options: Any) -> ExportReport:
    """``export`` of a store of either engine, with no ``SemanticCache`` (no model loaded)."""
    if isinstance(store, SQLiteStore):
        return export(store, folder, **options)
    from semcache.storage.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        raise TypeError(f"cannot export a {type(store).__name__}")
    return _export_copy(store, folder, None, **options)


def _export_copy(
    store: PostgresStore, folder: str | os.PathLike[str], pipeline: Pipeline | None, **options: Any
) -> ExportReport:
    with tempfile.TemporaryDirectory(prefix="semcache-export-") as tmp:
        copy = SQLiteStore(Path(tmp) / "cache.db")
        try:
            _to_sqlite(store, copy)
            source = copy if pipeline is None else _Copy(pipeline, copy)
            return export(source, folder, **options)
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
            instructor_rows: list[tuple[Any, ...]] = []
            if copy.columns(instructor_table.TABLE):
                instructor_rows = conn.execute(
                    f"SELECT {', '.join(_INSTRUCTOR_COLUMNS)} FROM {instructor_table.TABLE} "
                    "ORDER BY key"
                ).fetchall()
            added, n_thresholds, n_instructor = store.add_rows(entries, thresholds, instructor_rows)
            dimension = copy.settings().get("embedder_dimension")
            if dimension:  # recorded by the import (the database may not know it yet)
                store.check_settings({"embedder_dimension": dimension})
            exact_only = {
                int(row[0])
                for row in conn.execute("SELECT id FROM entries WHERE embedding IS NULL")
            }
        finally:
            copy.close()
    id_map = {old: added[tmp_id] for old, tmp_id in report.id_map.items() if tmp_id in added}
    return dataclasses.replace(
        report,
        imported=len(id_map),
        duplicates=report.duplicates + len(report.id_map) - len(id_map),
        exact_only=sum(1 for tmp_id in added if tmp_id in exact_only),
        thresholds=n_thresholds,
        id_map=id_map,
        instructor_cache=n_instructor,
    )


def _to_sqlite(store: PostgresStore, copy: SQLiteStore) -> None:
    """Copy entries (with their ids), settings, thresholds and instructor_cache rows from one
    snapshot."""
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
        rows = snap.rows(instructor_table.TABLE)
        first = next(rows, None)
        if first is not None:  # a file that never used the adapter carries no such table
            for statement in instructor_table.SCHEMA:
                conn.execute(statement)
            conn.executemany(
                f"INSERT INTO {instructor_table.TABLE} ({', '.join(_INSTRUCTOR_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_INSTRUCTOR_COLUMNS))})",
                [first, *rows],
            )
