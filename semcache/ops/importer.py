"""Import an export folder (``semcache.ops.export_format``) into a cache: all or nothing.

An import verifies the format version and every checksum, and parses every record and vector,
before it writes; then it inserts in one transaction. A corrupted folder (``ExportError``), any
error or a KeyboardInterrupt changes nothing. Entries get new ids in the target; an entry whose
exact key the target already holds is skipped, as is an ``instructor_cache`` row whose key it holds.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semcache.errors import ConfigMismatchError, ExportError
from semcache.ops.export_format import (
    INSTRUCTOR_FILE,
    THRESHOLDS_FILE,
    bar,
    load_value,
    quote,
    read_jsonl,
    table_columns,
    verify_export,
)
from semcache.pipeline import Front
from semcache.storage import instructor_table as instructor_cache
from semcache.storage.sqlite import SQLiteStore


@dataclass(frozen=True)
class ImportReport:
    imported: int
    duplicates: int  # exact key already in the target: the target's entry is kept
    filtered: int  # left out by the scope, namespace or age filters
    re_embedded: int
    exact_only: int
    thresholds: int  # persisted thresholds added (the target's own are never replaced)
    dropped_columns: list[str] = field(default_factory=list)  # exported columns the target lacks
    id_map: dict[int, int] = field(default_factory=dict)  # export id -> new id in the target
    instructor_cache: int = 0  # instructor_cache rows added (keys the target lacked)


def import_export(
    folder: str | os.PathLike[str],
    cache: Front,
    *,
    scopes: Iterable[str] | None = None,
    namespaces: Iterable[str] | None = None,
    newer_than: float | None = None,
    batch_size: int = 64,
    progress: bool | None = False,
) -> ImportReport:
    """Merge an export into ``cache``; entries get new ids in the target.

    ``scopes`` (full hashes or prefixes), ``namespaces`` and ``newer_than`` (seconds since
    creation) select what is imported. An entry whose exact key the target already holds is
    skipped. When the target's embedder differs from the export's, the prompts are re-embedded in
    batches with the target's embedder (entries without a prompt, or too long for its window, stay
    exact-only); otherwise the exported vectors are copied as they are, and no model is loaded.

    Rows of the ``instructor_cache`` table are added by key (a key the target holds keeps the
    target's value), with their ``expires_at``; ``newer_than`` applies to them too. Their keys are
    opaque hashes with no scope or namespace, so a ``scopes`` or ``namespaces`` filter leaves them
    all out rather than carry another tenant's answers along.
    """
    root = Path(folder)
    manifest = verify_export(root)
    records, vector_of = _read_export(root, manifest)
    wanted_scopes = tuple(scopes or ())
    wanted_ns = set(namespaces or ())
    since = None if newer_than is None else time.time() - newer_than
    selected = [
        r
        for r in records
        if (not wanted_scopes or str(r.get("scope", "")).startswith(wanted_scopes))
        and (not wanted_ns or r.get("namespace") in wanted_ns)
        and (since is None or (r.get("created_at") or 0) >= since)
    ]
    instructor_rows = [
        row
        for row in _read_instructor_rows(root, manifest)
        if not wanted_scopes
        and not wanted_ns
        and (since is None or (row.get("created_at") or 0) >= since)
    ]
    store = cache.db
    known = _existing_keys(store, [r["exact_key"] for r in selected])
    todo = [r for r in selected if r["exact_key"] not in known]
    if manifest["embedder"]["name"] == cache.pipeline.embedder.name:
        dimension = manifest["embedder"]["dimension"]
        re_embedded = 0
    else:
        vector_of = _re_embed(cache, todo, batch_size, progress)
        dimension = cache.pipeline.embedder.dimension if vector_of else None
        re_embedded = len(vector_of)
    recorded = store.settings().get("embedder_dimension")
    if recorded and dimension and vector_of and int(recorded) != dimension:
        raise ConfigMismatchError(
            f"the export's vectors have dimension {dimension}, the target cache {recorded}"
        )
    target_columns = store.columns("entries")
    columns = [c for c in manifest["columns"] if c in target_columns and c != "id"]
    dropped = [c for c in manifest["columns"] if c not in target_columns]
    sql = (
        f"INSERT INTO entries ({', '.join(quote(c) for c in [*columns, 'embedding'])}) "
        f"VALUES ({', '.join('?' * (len(columns) + 1))}) ON CONFLICT(exact_key) DO NOTHING"
    )
    id_map: dict[int, int] = {}
    with store.transaction() as conn:  # all or nothing, KeyboardInterrupt included
        if dimension and vector_of and not recorded:
            conn.execute(
                "INSERT OR IGNORE INTO settings (key, value) VALUES ('embedder_dimension', ?)",
                (str(dimension),),
            )
        for record in bar(todo, progress, desc="import", unit="entry"):
            vector = vector_of.get(record["id"])
            blob = None if vector is None else np.ascontiguousarray(vector, dtype="<f4").tobytes()
            cursor = conn.execute(sql, [load_value(record.get(c)) for c in columns] + [blob])
            if cursor.rowcount == 1 and cursor.lastrowid is not None:
                id_map[int(record["id"])] = int(cursor.lastrowid)
        n_thresholds = _merge_thresholds(conn, root, {str(r["scope"]) for r in selected})
        n_instructor = _merge_instructor_cache(conn, instructor_rows)
    embedded = sum(1 for old in id_map if old in vector_of)
    return ImportReport(
        imported=len(id_map),
        duplicates=len(selected) - len(id_map),
        filtered=len(records) - len(selected),
        re_embedded=re_embedded,
        exact_only=len(id_map) - embedded,
        thresholds=n_thresholds,
        dropped_columns=dropped,
        id_map=id_map,
        instructor_cache=n_instructor,
    )


def _read_export(
    root: Path, manifest: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    """Parse every record and vector up front, so nothing is written from a malformed export."""
    records = read_jsonl(root / "entries.jsonl")
    try:
        vectors = np.load(root / "embeddings.npy", allow_pickle=False)
        ids = np.load(root / "embedding_ids.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{root} cannot be read: {exc}") from exc
    if not all(isinstance(r, dict) and {"id", "exact_key", "scope"} <= r.keys() for r in records):
        raise ExportError(f"{root}/entries.jsonl has records without id, exact_key or scope")
    if len(records) != manifest.get("entries"):
        raise ExportError(
            f"{root}/entries.jsonl has {len(records)} entries, the manifest says more"
        )
    dimension = manifest["embedder"].get("dimension") or 0
    record_ids = {r["id"] for r in records}
    if (
        vectors.ndim != 2
        or vectors.shape != (len(ids), dimension if len(ids) else vectors.shape[1])
        or len(set(ids.tolist())) != len(ids)
        or not record_ids.issuperset(ids.tolist())
    ):
        raise ExportError(f"{root}: embeddings.npy and embedding_ids.npy do not match the entries")
    return records, {int(i): vectors[k] for k, i in enumerate(ids)}


def _read_instructor_rows(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The exported ``instructor_cache`` rows; none when the export has no such file (older
    exports, or a source file that never used ``SQLiteCache``)."""
    if INSTRUCTOR_FILE not in manifest["files"]:
        return []  # verify_export checked every listed file; an unlisted one is not trusted
    rows = read_jsonl(root / INSTRUCTOR_FILE)
    if not all(
        isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("value"), str)
        for r in rows
    ):
        raise ExportError(f"{root}/{INSTRUCTOR_FILE} has rows without a text key and value")
    return rows


def _merge_instructor_cache(conn: Any, rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose key the target lacks, creating the table (inside the import's
    transaction, so a failed import leaves no table behind) when the target never had one."""
    if not rows:
        return 0
    if not table_columns(conn, instructor_cache.TABLE):
        for statement in instructor_cache.SCHEMA:  # the integration's own DDL, idempotent
            conn.execute(statement)
    columns = table_columns(conn, instructor_cache.TABLE)
    added = 0
    for row in rows:
        names = [c for c in row if c in columns]
        sql = (
            f"INSERT OR IGNORE INTO {quote(instructor_cache.TABLE)} "
            f"({', '.join(map(quote, names))}) VALUES ({', '.join('?' * len(names))})"
        )
        added += conn.execute(sql, [load_value(row[c]) for c in names]).rowcount
    return int(added)


def _merge_thresholds(conn: Any, root: Path, scopes: set[str]) -> int:
    """Add the export's persisted thresholds the target lacks: per-schema and file-wide ones, and
    per-scope ones for the scopes imported. A threshold the target already has is kept."""
    path = root / THRESHOLDS_FILE
    columns = table_columns(conn, "thresholds")
    if not path.is_file() or not columns:
        return 0
    added = 0
    for row in json.loads(path.read_text(encoding="utf-8")):
        target = str(row.get("target", ""))
        if target.startswith("scope:") and target.removeprefix("scope:") not in scopes:
            continue
        names = [c for c in row if c in columns]
        marks = ", ".join("?" * len(names))
        sql = f"INSERT OR IGNORE INTO thresholds ({', '.join(map(quote, names))}) VALUES ({marks})"
        added += conn.execute(sql, [row[c] for c in names]).rowcount
    return int(added)


def _re_embed(
    cache: Front, records: list[dict[str, Any]], batch_size: int, progress: bool | None
) -> dict[int, np.ndarray]:
    """Embed the prompts with the target's model, as the cache would have when storing them."""
    embedder = cache.pipeline.embedder
    texts = [
        (int(r["id"]), r["prompt"])
        for r in records
        if isinstance(r.get("prompt"), str) and r["prompt"].strip() and embedder.fits(r["prompt"])
    ]
    out: dict[int, np.ndarray] = {}
    with bar(None, progress, total=len(texts), desc="re-embed", unit="text") as progress_bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            vectors = embedder.embed([text for _, text in batch])
            out.update((entry_id, vectors[k]) for k, (entry_id, _) in enumerate(batch))
            progress_bar.update(len(batch))
    return out


def _existing_keys(store: SQLiteStore, keys: list[str]) -> set[str]:
    found: set[str] = set()
    conn = store.connection()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        found.update(
            r[0]
            for r in conn.execute(
                f"SELECT exact_key FROM entries WHERE exact_key IN ({marks})", chunk
            )
        )
    return found
