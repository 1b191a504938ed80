"""``check(store, fix=False)``: verify that a cache is sound, and repair it on request.

Looks at the engine's own integrity (SQLite's integrity check; on PostgreSQL, the entry count the
change feed keeps), the recorded settings, every embedding blob (size, finite, unit length), the
JSON columns, the scopes, and that the per-scope FAISS indexes derive from storage with every
valid vector. Reads the store and builds indexes in memory; never loads the embedding model. All
repairs run in one ``store.transaction()``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semcache.index import file_format
from semcache.storage.base import Rows
from semcache.storage.schema import FORMAT_VERSION

_NORM_TOLERANCE = 1e-3  # float32 vectors from a normalizing model are within ~1e-6 of norm 1
_CHUNK = 500  # ids per UPDATE/DELETE statement, well under SQLite's parameter limit


@dataclass(frozen=True)
class Finding:
    """One check: what was looked at, whether it passed, and how many rows a fix repaired."""

    check: str
    ok: bool
    detail: str
    fixed: int = 0


@dataclass
class CheckReport:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is left broken (problems a fix repaired count as resolved)."""
        return all(f.ok or f.fixed for f in self.findings)


_SCOPES_MIXED = (  # a scope is a hash of namespace, model and schema among others: never mixed
    "scope IN (SELECT scope FROM entries GROUP BY scope HAVING count(DISTINCT namespace "
    "|| '|' || coalesce(model, '') || '|' || schema_name) > 1)"
)
_DELETE = "DELETE FROM entries WHERE id IN ({})"
_NULL_EMBEDDINGS = "UPDATE entries SET embedding = NULL WHERE id IN ({})"
_NULL_RAW = "UPDATE entries SET raw_json = NULL WHERE id IN ({})"
_NULL_USAGE = "UPDATE entries SET usage_json = NULL WHERE id IN ({})"


def check(store: Rows, fix: bool = False) -> CheckReport:
    """Verify the cache: the engine's own integrity, settings, every embedding blob, JSON
    columns, scopes, and that the per-scope indexes derive from storage with every valid vector.

    With ``fix`` (one transaction): a broken embedding (wrong size, NaN/inf, not unit length) is
    set to NULL, so the entry stays served by the exact tier; an entry whose answer is not JSON is
    deleted; a damaged raw completion or usage is set to NULL; a missing dimension setting is
    recorded from the blobs; on PostgreSQL, an entry count that disagrees with the table is
    recounted. The FAISS indexes are derived: a cache builds a scope's index from the repaired
    rows, or loads a large scope's saved one (``<file>.index/``) and catches it up; either way
    every candidate is scored against the stored vector, so a vector set to NULL is never served.
    On PostgreSQL, a row deleted here reaches every node's replica through the change feed.
    """
    settings = store.settings()
    with store.reading() as conn:
        return _check(store, conn, settings, fix)


def _check(store: Rows, conn: Any, settings: dict[str, str], fix: bool) -> CheckReport:
    version, name = settings.get("format_version"), settings.get("embedder_name")
    # A SemanticCache records both when it opens the file; a file only SQLiteCache (instructor's
    # cache=) has used holds no entries and no settings, and is fine as it is.
    unused = (
        version is None
        and name is None
        and not conn.execute("SELECT 1 FROM entries LIMIT 1").fetchone()
    )
    repairs: list[tuple[str, list[Any]]] = []  # run in one transaction when fixing
    findings = [
        _engine_finding(store, conn, fix, repairs),
        Finding(
            "format version",
            version == str(FORMAT_VERSION) or unused,
            "not recorded yet (no entries)" if unused else f"{version}",
        ),
        Finding("embedder name", name is not None or unused, name or "not recorded"),
    ]
    rows = conn.execute("SELECT id, embedding FROM entries WHERE embedding IS NOT NULL").fetchall()
    sizes = Counter(len(b) for _, b in rows if isinstance(b, bytes))
    recorded = settings.get("embedder_dimension")
    dimension = int(recorded) if recorded else (sizes.most_common(1)[0][0] // 4 if sizes else None)
    if recorded or dimension is None:
        findings.append(Finding("embedder dimension", True, recorded or "none yet (no embeddings)"))
    else:  # only recorded on a cache's first semantic lookup; the blobs tell it meanwhile
        detail = f"not recorded; blobs say {dimension}"
        findings.append(Finding("embedder dimension", False, detail, int(fix)))
        record = (
            "INSERT INTO settings (key, value) VALUES ('embedder_dimension', ?) "
            "ON CONFLICT (key) DO NOTHING"
        )
        repairs.append((record, [str(dimension)]))

    bad = _bad_embeddings(rows, dimension)
    answer, raw, usage = _bad_json(store, conn)
    completion = sorted(set(raw) | set(usage))
    mixed = [int(r[0]) for r in conn.execute(f"SELECT id FROM entries WHERE {_SCOPES_MIXED}")]
    problems: list[tuple[str, list[int], str, list[tuple[str, list[int]]]]] = [
        ("embeddings", bad, f"{len(rows)} checked, {len(bad)} broken", [(_NULL_EMBEDDINGS, bad)]),
        ("answer JSON", answer, f"{len(answer)} failing", [(_DELETE, answer)]),
        (
            "completion JSON",
            completion,
            f"{len(completion)} failing",
            [(_NULL_RAW, raw), (_NULL_USAGE, usage)],
        ),
        ("scopes", mixed, f"{len(mixed)} failing", []),
    ]
    for label, ids, detail, fixes in problems:
        fixed = len(ids) if fix and fixes else 0
        findings.append(Finding(label, not ids, detail + _ids(ids), fixed))
        for statement, targets in fixes:
            repairs += [(statement.format(_marks(chunk)), chunk) for chunk in _chunks(targets)]
    if dimension is not None:
        findings.append(_index_finding(store, conn, dimension, sizes[dimension * 4]))
        findings.append(_saved_index_finding(store, conn, dimension, fix))
    if fix and repairs:
        with store.transaction() as tx:
            for statement, params in repairs:
                tx.execute(statement, params)
    entries, embedded, scopes = conn.execute(
        "SELECT count(*), count(embedding), count(DISTINCT scope) FROM entries"
    ).fetchone()
    counts = f"{entries} entries, {embedded} embedded, {scopes} scopes"
    findings.append(Finding("counts", True, counts))
    return CheckReport(findings)


def _engine_finding(
    store: Rows, conn: Any, fix: bool, repairs: list[tuple[str, list[Any]]]
) -> Finding:
    """SQLite's own integrity check; on PostgreSQL (whose server checks its own pages), that the
    entry count the change feed keeps (``count()``, ``max_entries``) agrees with the table."""
    if store.dialect == "sqlite":
        integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
        return Finding("sqlite integrity", integrity == ["ok"], "; ".join(integrity[:5]))
    # One statement, one snapshot: the count is updated in the transaction of each change.
    kept, actual = conn.execute(
        "SELECT (SELECT entries FROM feed_state WHERE one), (SELECT count(*) FROM entries)"
    ).fetchone()
    if int(kept) == int(actual):
        return Finding("entry count", True, f"{actual}, as the change feed counts")
    from semcache.storage.postgres import migrations  # psycopg's side loads for PostgreSQL only

    # Recounted under the feed's lock, which every commit of an entry change takes.
    lock = f"SELECT pg_advisory_xact_lock({migrations.lock_key(migrations.FEED_LOCK)})"
    repairs.append((lock, []))
    repairs.append(("UPDATE feed_state SET entries = (SELECT count(*) FROM entries) WHERE one", []))
    detail = f"the change feed counts {kept}, the table holds {actual}"
    return Finding("entry count", False, detail, int(fix))


def _bad_json(store: Rows, conn: Any) -> tuple[list[int], list[int], list[int]]:
    """Ids whose answer, raw completion or usage is not JSON. SQLite checks in SQL; PostgreSQL 15
    has no per-row JSON test that does not abort the statement, so its rows are parsed here."""
    if store.dialect == "sqlite":
        return (
            _ids_where(conn, "json_valid(response_json) = 0"),
            _ids_where(conn, "raw_json IS NOT NULL AND json_valid(raw_json) = 0"),
            _ids_where(conn, "usage_json IS NOT NULL AND json_valid(usage_json) = 0"),
        )
    answer: list[int] = []
    raw: list[int] = []
    usage: list[int] = []
    cursor = conn.execute("SELECT id, response_json, raw_json, usage_json FROM entries ORDER BY id")
    for entry_id, response_json, raw_json, usage_json in cursor:
        if not _is_json(response_json):
            answer.append(int(entry_id))
        if raw_json is not None and not _is_json(raw_json):
            raw.append(int(entry_id))
        if usage_json is not None and not _is_json(usage_json):
            usage.append(int(entry_id))
    return answer, raw, usage


def _is_json(text: Any) -> bool:
    try:
        json.loads(text, parse_constant=_not_json)
    except (TypeError, ValueError):
        return False
    return True


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _bad_embeddings(rows: list[tuple[Any, Any]], dimension: int | None) -> list[int]:
    bad = []
    for entry_id, blob in rows:
        if not isinstance(blob, bytes) or dimension is None or len(blob) != dimension * 4:
            bad.append(int(entry_id))
            continue
        vector = np.frombuffer(blob, dtype="<f4").astype(np.float64)
        norm = float(np.linalg.norm(vector))
        if not math.isfinite(norm) or abs(norm - 1.0) > _NORM_TOLERANCE:
            bad.append(int(entry_id))
    return bad


def _index_finding(store: Rows, conn: Any, dimension: int, expected: int) -> Finding:
    """Build every scope's index from storage, as a cache does on open: it must hold every blob
    of the right size (NaN or non-unit vectors too, until a fix drops them)."""
    from semcache.index.vector_index import VectorIndex  # FAISS loads here, not when the CLI starts

    index = VectorIndex(dimension)
    all_scopes = [r[0] for r in conn.execute("SELECT DISTINCT scope FROM entries")]
    for scope in all_scopes:
        index.add(scope, *store.vectors_since(scope, 0, dimension))
    source = "SQLite" if store.dialect == "sqlite" else "PostgreSQL"
    detail = f"{len(all_scopes)} scopes rebuilt from {source}, {index.size()} vectors"
    return Finding("index", index.size() == expected, detail)


def _saved_index_finding(store: Rows, conn: Any, dimension: int, fix: bool) -> Finding:
    """Read every saved index file (``<file>.index/``) as a cache would load it. An unusable one
    (damaged, foreign, of an older format, or for a scope with no entries) costs only a rebuild
    from SQLite on first use; with ``fix`` it is deleted so that no process tries it again."""
    from semcache.index.stages import VECTOR_KINDS
    from semcache.index.vector_index import PERSIST_AT, VectorIndex

    folder = None if store.path is None else file_format.folder_for(store.path)
    files = sorted(folder.glob("*.faiss")) if folder is not None and folder.is_dir() else []
    if store.dialect != "sqlite":
        return Finding("saved indexes", True, "none (nodes build theirs from the database)")
    if folder is None or not files:
        none = f"none (scopes under {PERSIST_AT:,} vectors are not saved)"
        return Finding("saved indexes", True, none)
    settings = store.settings()
    owner, embedder = settings.get("database_id", ""), settings.get("embedder_name", "")
    scopes = {r[0] for r in conn.execute("SELECT DISTINCT scope FROM entries")}
    unusable: list[tuple[Path, str]] = []
    for path in files:
        kind = (file_format.peek(path) or {}).get("vectors")
        index = VectorIndex(
            dimension,
            folder,
            owner,
            vectors=kind if kind in VECTOR_KINDS else "float32",
            embedder=embedder,
        )
        why = index.inspect(path.stem)
        if not why and path.stem not in scopes:
            why = "is for a scope with no entries"
        if why:
            unusable.append((path, why))
    fixed = 0
    if fix:
        for path, _ in unusable:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            fixed += 1
    detail = f"{len(files)} checked, {len(unusable)} unusable (rebuilt from SQLite on use)"
    detail += "".join(f"; {p.stem[:12]}: {why}" for p, why in unusable[:5])
    return Finding("saved indexes", not unusable, detail, fixed)


def _ids_where(conn: Any, condition: str) -> list[int]:
    return [int(r[0]) for r in conn.execute(f"SELECT id FROM entries WHERE {condition}")]


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _marks(items: list[Any]) -> str:
    return ",".join("?" * len(items))


def _ids(ids: list[int]) -> str:
    """The first ids of a finding, for the report: " (ids 3, 7, ...)"."""
    listed = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
    return f" (ids {listed})" if ids else ""
