"""The export folder format, shared by ``semcache.ops.export`` (writing) and ``semcache.ops.importer``.

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
    instructor_cache.jsonl the rows of ``SQLiteCache``'s ``instructor_cache`` table, one JSON
                           object per row, when the file has that table

Vectors are L2-normalized, so an inner-product search returns cosine similarities. Every file is
listed in the manifest with its size and sha256; the manifest is written last.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tqdm import tqdm

from semcache.errors import ExportError

EXPORT_FORMAT = "semcache-export"
EXPORT_VERSION = 1
DATA_FILES = ("entries.jsonl", "embeddings.npy", "embedding_ids.npy")
THRESHOLDS_FILE = "thresholds.json"
INSTRUCTOR_FILE = "instructor_cache.jsonl"


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
    if not isinstance(files, dict) or any(name not in files for name in DATA_FILES):
        raise ExportError(f"{root}/manifest.json does not list every data file")
    if not isinstance(manifest.get("embedder"), dict) or not isinstance(
        manifest.get("columns"), list
    ):
        raise ExportError(f"{root}/manifest.json lacks the embedder or the columns")
    for name, meta in files.items():
        path = root / name
        if ".." in Path(name).parts or not path.is_file():
            raise ExportError(f"{root} is incomplete: {name} is missing")
        if path.stat().st_size != meta.get("bytes") or sha256(path) != meta.get("sha256"):
            raise ExportError(f"{root}/{name} does not match its checksum: the export is damaged")
    return manifest


def dump_record(record: dict[str, Any]) -> str:
    """One JSON line for a row; a BLOB becomes ``{"$base64": ...}``."""
    values = {
        k: {"$base64": base64.b64encode(v).decode("ascii")} if isinstance(v, bytes) else v
        for k, v in record.items()
    }
    try:
        return json.dumps(values, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        name = record.get("id", record.get("key"))  # an entry's id, an instructor_cache key
        raise ExportError(f"row {name!r} holds a value JSON cannot carry: {exc}") from exc


def load_value(value: Any) -> Any:
    """A column value from a JSON line: plain JSON, or a tagged BLOB (no column holds a dict)."""
    if isinstance(value, dict) and set(value) == {"$base64"}:
        return base64.b64decode(value["$base64"])
    if isinstance(value, (dict, list)):
        raise ExportError(f"unexpected structured column value {value!r:.80}")
    return value


def read_jsonl(path: Path) -> list[Any]:
    """Every line of a JSON-lines file, parsed (an unreadable file is an ``ExportError``)."""
    try:
        with path.open(encoding="utf-8") as lines:
            return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path} cannot be read: {exc}") from exc


def table_rows(conn: Any, table: str) -> list[dict[str, Any]] | None:
    """Every row of ``table`` as dicts, or None when this file has no such table."""
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
        return None
    cursor = conn.execute(f"SELECT * FROM {quote(table)}")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def table_columns(conn: Any, table: str) -> list[str]:
    """The columns of ``table``; empty when the file has no such table."""
    return [str(r[1]) for r in conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()]


def quote(name: str) -> str:
    """A SQL identifier, quoted (exported column names come from another file)."""
    return '"' + name.replace('"', '""') + '"'


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bar(items: Any, progress: bool | None, **kwargs: Any) -> Any:
    """A tqdm bar on stderr; ``progress=None`` lets tqdm show it only on a terminal."""
    return tqdm(items, disable=None if progress is None else not progress, leave=False, **kwargs)
