"""Export a cache to a portable, self-describing folder (``semcache.ops.export_format`` has the layout).

An export is written into a temporary sibling folder and renamed into place, and the manifest is
its last file, so an interrupted export leaves nothing that looks complete. Everything is read in
one SQLite snapshot, so rows, vectors and the ``instructor_cache`` table agree even while other
processes write. Importing is ``semcache.ops.importer``; ``import_export``, ``ImportReport`` and
``verify_export`` are re-exported here, where callers of the first version found them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from semcache.errors import ExportError, UsageError
from semcache.ops.export_format import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    INSTRUCTOR_FILE,
    THRESHOLDS_FILE,
    bar,
    dump_record,
    quote,
    sha256,
    table_rows,
    verify_export,
)
from semcache.ops.importer import ImportReport, import_export
from semcache.pipeline import Front
from semcache.storage.instructor_table import TABLE as INSTRUCTOR_TABLE
from semcache.storage.sqlite import SQLiteStore

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ExportError",
    "ExportReport",
    "ImportReport",
    "export",
    "import_export",
    "verify_export",
]

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class ExportReport:
    folder: Path
    entries: int
    embedded: int
    scopes: int
    bytes: int
    skipped_embeddings: int  # blobs of the wrong size: never indexed, so exported as exact-only
    instructor_cache: int = 0  # rows of SQLiteCache's table


def export(
    source: Front | SQLiteStore,
    folder: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool | None = False,
) -> ExportReport:
    """Write every entry of ``source`` to ``folder`` (the layout is in ``semcache.ops.export_format``).

    ``overwrite`` replaces an existing export (a folder holding a manifest) but never another
    folder. ``progress=None`` shows a progress bar only on a terminal.
    """
    threshold = None
    if isinstance(source, SQLiteStore):
        store = source
    else:
        source.pipeline.flush()  # buffered hit counts belong in the export
        threshold = source.pipeline.threshold
        store = source.db
    target = Path(folder)
    is_export = (target / "manifest.json").is_file()
    if target.exists() and any(target.iterdir()) and not (overwrite and is_export):
        what = "an export" if is_export else "a non-empty folder"
        raise UsageError(f"{target} is {what}: choose a new folder (or overwrite an export)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        manifest = _write_export(store, tmp, threshold, progress)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:  # KeyboardInterrupt included: leave no half-written folder behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportReport(
        folder=target,
        entries=manifest["entries"],
        embedded=manifest["embedded"],
        scopes=len(manifest["scopes"]),
        bytes=sum(f.stat().st_size for f in target.rglob("*") if f.is_file()),
        skipped_embeddings=manifest["skipped_embeddings"],
        instructor_cache=manifest["instructor_cache"] or 0,
    )


def _write_export(
    store: SQLiteStore, folder: Path, threshold: float | None, progress: bool | None
) -> dict[str, Any]:
    conn = store.connection()
    conn.execute("BEGIN")  # one read snapshot: rows and blobs agree even while others write
    try:
        columns = store.columns("entries")
        settings = store.settings()
        total = int(conn.execute("SELECT count(*) FROM entries").fetchone()[0])
        dimension = _dimension(conn, settings)
        width = (dimension or 0) * 4
        sql = "SELECT count(*) FROM entries WHERE length(embedding) = ?"
        n_vectors = int(conn.execute(sql, (width,)).fetchone()[0]) if width else 0
        vectors = np.lib.format.open_memmap(
            folder / "embeddings.npy", mode="w+", dtype="<f4", shape=(n_vectors, dimension or 0)
        )
        ids = np.zeros(n_vectors, dtype=np.int64)
        scopes: dict[str, dict[str, Any]] = {}
        rows_of: dict[str, list[int]] = defaultdict(list)
        skipped = n = 0
        quoted = ", ".join(quote(c) for c in columns)
        cursor = conn.execute(f"SELECT {quoted} FROM entries ORDER BY id")
        with (folder / "entries.jsonl").open("w", encoding="utf-8") as out:
            for row in bar(cursor, progress, total=total, desc="export", unit="entry"):
                record = dict(zip(columns, row, strict=True))
                blob = record.pop("embedding", None)
                info = scopes.setdefault(record["scope"], _scope_info(record))
                info["entries"] += 1
                info["hits"] += record.get("hits") or 0
                if isinstance(blob, bytes) and width and len(blob) == width:
                    vectors[n] = np.frombuffer(blob, dtype="<f4")
                    ids[n] = record["id"]
                    rows_of[record["scope"]].append(n)
                    info["embedded"] += 1
                    n += 1
                elif blob is not None:
                    skipped += 1
                out.write(dump_record(record) + "\n")
        thresholds = table_rows(conn, "thresholds")
        instructor_rows = _write_instructor_cache(conn, folder / INSTRUCTOR_FILE)
    finally:
        conn.execute("COMMIT")
    if thresholds is not None:  # persisted per-scope/per-schema thresholds travel with the entries
        text = json.dumps(thresholds, indent=2)
        (folder / THRESHOLDS_FILE).write_text(text, encoding="utf-8")
    norms = np.linalg.norm(vectors.astype(np.float64), axis=1) if n_vectors else np.ones(0)
    normalized = bool(np.all(np.abs(norms - 1.0) < 1e-3))
    vectors.flush()
    np.save(folder / "embedding_ids.npy", ids, allow_pickle=False)
    if n_vectors:
        _write_indexes(folder, vectors, ids, rows_of, scopes, dimension or 0)
    del vectors
    now = time.time()
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_VERSION,
        "created_at": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(),
        "created_at_epoch": now,
        "source": {"file": store.path.name if store.path else None, "settings": settings},
        "embedder": {
            "name": settings.get("embedder_name"),
            "dimension": dimension,
            "normalization": "l2" if normalized else "none",
            "similarity": "cosine (inner product of the L2-normalized vectors)",
        },
        "threshold": threshold,
        "columns": [c for c in columns if c != "embedding"],
        "entries": total,
        "embedded": n_vectors,
        "skipped_embeddings": skipped,
        "scopes": scopes,
        "instructor_cache": instructor_rows,  # None: the file has no instructor_cache table
        "files": {
            str(p.relative_to(folder)): {"sha256": sha256(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_instructor_cache(conn: Any, path: Path) -> int | None:
    """Stream the rows of ``SQLiteCache``'s table (values are whole completions: never all in
    memory at once) to ``path``; None, and no file, when this cache file has no such table."""
    exists = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    if not conn.execute(exists, (INSTRUCTOR_TABLE,)).fetchone():
        return None
    cursor = conn.execute(f"SELECT * FROM {quote(INSTRUCTOR_TABLE)} ORDER BY rowid")
    names = [d[0] for d in cursor.description]
    n = 0
    with path.open("w", encoding="utf-8") as out:
        for row in cursor:
            out.write(dump_record(dict(zip(names, row, strict=True))) + "\n")
            n += 1
    return n


def _write_indexes(
    folder: Path,
    vectors: np.ndarray,
    ids: np.ndarray,
    rows_of: dict[str, list[int]],
    scopes: dict[str, dict[str, Any]],
    dimension: int,
) -> None:
    """One FAISS file per scope, the same index type the cache builds in memory."""
    import faiss

    (folder / "indexes").mkdir()
    for scope, rows in rows_of.items():
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        index.add_with_ids(np.ascontiguousarray(vectors[rows]), ids[rows])
        name = scope if _SAFE_NAME.fullmatch(scope) else hashlib.sha256(scope.encode()).hexdigest()
        faiss.write_index(index, str(folder / "indexes" / f"{name}.faiss"))
        scopes[scope]["index"] = f"indexes/{name}.faiss"


def _dimension(conn: Any, settings: dict[str, str]) -> int | None:
    """The recorded dimension, or the size most blobs have (recorded only on a first search)."""
    if settings.get("embedder_dimension"):
        return int(settings["embedder_dimension"])
    row = conn.execute(
        "SELECT length(embedding) AS n FROM entries WHERE embedding IS NOT NULL "
        "GROUP BY n ORDER BY count(*) DESC LIMIT 1"
    ).fetchone()
    return int(row[0]) // 4 if row and row[0] else None


def _scope_info(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "namespace": record.get("namespace"),
        "model": record.get("model"),
        "schema_name": record.get("schema_name"),
        "entries": 0,
        "embedded": 0,
        "hits": 0,
        "index": None,
    }
