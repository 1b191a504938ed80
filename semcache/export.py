"""Export a cache to a portable, self-describing folder, and import such a folder into a cache.

Layout (export format version 1)::

    manifest.json          format version, embedder name/dimension/normalization, counts per
                           scope, creation time, columns, and the sha256 of every other file
    entries.jsonl          one JSON object per entry: every column of ``entries`` but the
                           embedding (JSON columns stay strings; other BLOBs {"$base64": ...})
    embeddings.npy         float32, shape (n, dimension): row i is the vector of embedding_ids[i]
    embedding_ids.npy      int64, shape (n,): the ``id`` in entries.jsonl of each row
    indexes/<scope>.faiss  ``faiss.write_index`` of an ``IndexIDMap2(IndexFlatIP(dimension))``
                           per scope; its vector ids are the ``id`` values of entries.jsonl
    thresholds.json        the persisted thresholds (per scope, per schema, file-wide)

Vectors are L2-normalized, so an inner-product search returns cosine similarities. An export is
written into a temporary sibling folder and renamed into place, and the manifest is its last
file, so an interrupted export leaves nothing that looks complete. An import verifies every
checksum and parses everything before it writes, then inserts in one transaction: a corrupted
folder, an error or a KeyboardInterrupt changes nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from semcache.admin import entry_columns
from semcache.cache import SemanticCache
from semcache.errors import ConfigMismatchError, ExportError, UsageError
from semcache.store import Store

EXPORT_FORMAT = "semcache-export"
EXPORT_VERSION = 1
_DATA_FILES = ("entries.jsonl", "embeddings.npy", "embedding_ids.npy")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class ExportReport:
    folder: Path
    entries: int
    embedded: int
    scopes: int
    bytes: int
    skipped_embeddings: int  # blobs of the wrong size: never indexed, so exported as exact-only


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


def export(
    source: SemanticCache | Store,
    folder: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool | None = False,
) -> ExportReport:
    """Write every entry of ``source`` to ``folder`` (see the module docstring for the layout).

    ``overwrite`` replaces an existing export (a folder holding a manifest) but never another
    folder. ``progress=None`` shows a progress bar only on a terminal.
    """
    threshold = None
    if isinstance(source, SemanticCache):
        source.flush()  # buffered hit counts belong in the export
        threshold = source.threshold
    store = source.db if isinstance(source, SemanticCache) else source
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
    )


def _write_export(
    store: Store, folder: Path, threshold: float | None, progress: bool | None
) -> dict[str, Any]:
    conn = store.connection()
    conn.execute("BEGIN")  # one read snapshot: rows and blobs agree even while others write
    try:
        columns = entry_columns(store)
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
        quoted = ", ".join(_quote(c) for c in columns)
        cursor = conn.execute(f"SELECT {quoted} FROM entries ORDER BY id")
        with (folder / "entries.jsonl").open("w", encoding="utf-8") as out:
            for row in _bar(cursor, progress, total=total, desc="export", unit="entry"):
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
                out.write(_dump_record(record) + "\n")
        thresholds = _table_rows(conn, "thresholds")
    finally:
        conn.execute("COMMIT")
    if thresholds is not None:  # persisted per-scope/per-schema thresholds travel with the entries
        (folder / "thresholds.json").write_text(json.dumps(thresholds, indent=2), encoding="utf-8")
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
        "files": {
            str(p.relative_to(folder)): {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


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


def verify_export(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Check an export folder without importing it: manifest, format version, every checksum.

    Returns the manifest; raises ``ExportError`` naming the first problem found.
    """
    root = Path(folder)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(
            f"{root} has no manifest.json: not an export, or an interrupted one"
        ) from None
    except (OSError, ValueError) as exc:
        raise ExportError(f"{root}/manifest.json is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(
            f"{root} is not a semcache export (manifest format is not {EXPORT_FORMAT})"
        )
    version = manifest.get("format_version")
    if version != EXPORT_VERSION:
        raise ExportError(
            f"{root} has export format version {version}; this semcache reads {EXPORT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or any(name not in files for name in _DATA_FILES):
        raise ExportError(f"{root}/manifest.json does not list every data file")
    if not isinstance(manifest.get("embedder"), dict) or not isinstance(
        manifest.get("columns"), list
    ):
        raise ExportError(f"{root}/manifest.json lacks the embedder or the columns")
    for name, meta in files.items():
        path = root / name
        if ".." in Path(name).parts or not path.is_file():
            raise ExportError(f"{root} is incomplete: {name} is missing")
        if path.stat().st_size != meta.get("bytes") or _sha256(path) != meta.get("sha256"):
            raise ExportError(f"{root}/{name} does not match its checksum: the export is damaged")
    return manifest


def import_export(
    folder: str | os.PathLike[str],
    cache: SemanticCache,
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
    """
    manifest = verify_export(folder)
    records, vector_of = _read_export(Path(folder), manifest)
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
    store = cache.db
    known = _existing_keys(store, [r["exact_key"] for r in selected])
    todo = [r for r in selected if r["exact_key"] not in known]
    if manifest["embedder"]["name"] == cache.embedder.name:
        dimension = manifest["embedder"]["dimension"]
        re_embedded = 0
    else:
        vector_of = _re_embed(cache, todo, batch_size, progress)
        dimension = cache.embedder.dimension if vector_of else None
        re_embedded = len(vector_of)
    recorded = store.settings().get("embedder_dimension")
    if recorded and dimension and vector_of and int(recorded) != dimension:
        raise ConfigMismatchError(
            f"the export's vectors have dimension {dimension}, the target cache {recorded}"
        )
    target_columns = entry_columns(store)
    columns = [c for c in manifest["columns"] if c in target_columns and c != "id"]
    dropped = [c for c in manifest["columns"] if c not in target_columns]
    sql = (
        f"INSERT INTO entries ({', '.join(_quote(c) for c in [*columns, 'embedding'])}) "
        f"VALUES ({', '.join('?' * (len(columns) + 1))}) ON CONFLICT(exact_key) DO NOTHING"
    )
    id_map: dict[int, int] = {}
    with store.transaction() as conn:  # all or nothing, KeyboardInterrupt included
        if dimension and vector_of and not recorded:
            conn.execute(
                "INSERT OR IGNORE INTO settings (key, value) VALUES ('embedder_dimension', ?)",
                (str(dimension),),
            )
        for record in _bar(todo, progress, desc="import", unit="entry"):
            vector = vector_of.get(record["id"])
            blob = None if vector is None else np.ascontiguousarray(vector, dtype="<f4").tobytes()
            cursor = conn.execute(sql, [_load_value(record.get(c)) for c in columns] + [blob])
            if cursor.rowcount == 1 and cursor.lastrowid is not None:
                id_map[int(record["id"])] = int(cursor.lastrowid)
        n_thresholds = _merge_thresholds(conn, Path(folder), {str(r["scope"]) for r in selected})
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
    )


def _read_export(
    root: Path, manifest: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[int, np.ndarray]]:
    """Parse every record and vector up front, so nothing is written from a malformed export."""
    try:
        with (root / "entries.jsonl").open(encoding="utf-8") as lines:
            records = [json.loads(line) for line in lines if line.strip()]
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


def _merge_thresholds(conn: Any, root: Path, scopes: set[str]) -> int:
    """Add the export's persisted thresholds the target lacks: per-schema and file-wide ones, and
    per-scope ones for the scopes imported. A threshold the target already has is kept."""
    path = root / "thresholds.json"
    columns = [str(r[1]) for r in conn.execute("PRAGMA table_info(thresholds)").fetchall()]
    if not path.is_file() or not columns:
        return 0
    added = 0
    for row in json.loads(path.read_text(encoding="utf-8")):
        target = str(row.get("target", ""))
        if target.startswith("scope:") and target.removeprefix("scope:") not in scopes:
            continue
        names = [c for c in row if c in columns]
        marks = ", ".join("?" * len(names))
        sql = f"INSERT OR IGNORE INTO thresholds ({', '.join(map(_quote, names))}) VALUES ({marks})"
        added += conn.execute(sql, [row[c] for c in names]).rowcount
    return int(added)


def _re_embed(
    cache: SemanticCache, records: list[dict[str, Any]], batch_size: int, progress: bool | None
) -> dict[int, np.ndarray]:
    """Embed the prompts with the target's model, as the cache would have when storing them."""
    embedder = cache.embedder
    texts = [
        (int(r["id"]), r["prompt"])
        for r in records
        if isinstance(r.get("prompt"), str) and r["prompt"].strip() and embedder.fits(r["prompt"])
    ]
    out: dict[int, np.ndarray] = {}
    with _bar(None, progress, total=len(texts), desc="re-embed", unit="text") as bar:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            vectors = embedder.embed([text for _, text in batch])
            out.update((entry_id, vectors[k]) for k, (entry_id, _) in enumerate(batch))
            bar.update(len(batch))
    return out


def _existing_keys(store: Store, keys: list[str]) -> set[str]:
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


def _table_rows(conn: Any, table: str) -> list[dict[str, Any]] | None:
    """Every row of ``table`` as dicts, or None when this file has no such table."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
        return None
    cursor = conn.execute(f"SELECT * FROM {_quote(table)}")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


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


def _dump_record(record: dict[str, Any]) -> str:
    values = {
        k: {"$base64": base64.b64encode(v).decode("ascii")} if isinstance(v, bytes) else v
        for k, v in record.items()
    }
    try:
        return json.dumps(values, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ExportError(
            f"entry {record.get('id')} holds a value JSON cannot carry: {exc}"
        ) from exc


def _load_value(value: Any) -> Any:
    """A column value from entries.jsonl: plain JSON, or a tagged BLOB (no column holds a dict)."""
    if isinstance(value, dict) and set(value) == {"$base64"}:
        return base64.b64decode(value["$base64"])
    if isinstance(value, (dict, list)):
        raise ExportError(f"unexpected structured column value {value!r:.80}")
    return value


def _quote(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bar(items: Any, progress: bool | None, **kwargs: Any) -> Any:
    """A tqdm bar on stderr; ``progress=None`` lets tqdm show it only on a terminal."""
    return tqdm(items, disable=None if progress is None else not progress, leave=False, **kwargs)
