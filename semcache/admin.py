"""Row-level maintenance over a cache file: list, show, prune, vacuum, check, views, nearest.

Everything here works on a ``Store`` and never loads the embedding model (except ``nearest``, which
is handed an embedder), so the CLI commands built on it start without importing torch. Columns are
read with ``PRAGMA table_info`` where a function carries whole rows, because the ``entries`` table
grows columns over time (``expires_at``, ...) and maintenance code must not silently drop them.
All SQL is parameterized; every write goes through ``store.transaction()``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from semcache.cache import DEFAULT_THRESHOLD
from semcache.embedding import Embedder
from semcache.errors import EntryNotFoundError, UsageError
from semcache.keys import schema_fingerprint
from semcache.store import FORMAT_VERSION, Store

SORTS = ("recent", "hits", "created", "id")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_NORM_TOLERANCE = 1e-3  # float32 vectors from a normalizing model are within ~1e-6 of norm 1
_CHUNK = 500  # ids per DELETE/UPDATE statement, well under SQLite's parameter limit

VIEWS = {
    "entries_overview": """SELECT id, namespace, model, schema_name, prompt, hits, total_tokens,
        embedding IS NOT NULL AS embedded,
        datetime(created_at, 'unixepoch') AS created_at,
        datetime(last_hit_at, 'unixepoch') AS last_hit_at
        FROM entries""",
    "hits_per_scope": """SELECT scope, namespace, model, schema_name, count(*) AS entries,
        sum(hits) AS hits, sum(hits * total_tokens) AS tokens_avoided,
        datetime(max(last_hit_at), 'unixepoch') AS last_hit_at
        FROM entries GROUP BY scope, namespace, model, schema_name""",
}


@dataclass(frozen=True)
class EntryFilter:
    """Which entries a listing or a prune applies to; every field given must match.

    ``scope`` may be a prefix of the scope hash (``ls`` shows the first 12 characters).
    ``older_than``/``newer_than`` are ages in seconds, measured from ``created_at``. ``expired``
    needs an ``expires_at`` column (epoch seconds) and selects rows whose TTL has passed.
    """

    scope: str | None = None
    namespace: str | None = None
    schema_name: str | None = None
    model: str | None = None
    older_than: float | None = None
    newer_than: float | None = None
    never_hit: bool = False
    expired: bool = False

    def is_empty(self) -> bool:
        return self == EntryFilter()

    def where(self, columns: list[str], now: float | None = None) -> tuple[str, list[Any]]:
        """A SQL condition and its parameters; ``"1"`` when nothing is filtered."""
        now = time.time() if now is None else now
        parts: list[str] = []
        params: list[Any] = []
        if self.scope:
            parts.append("substr(scope, 1, length(?)) = ?")
            params += [self.scope, self.scope]
        for column in ("namespace", "schema_name", "model"):
            value = getattr(self, column)
            if value is not None:
                parts.append(f"{column} = ?")
                params.append(value)
        if self.older_than is not None:
            parts.append("created_at < ?")
            params.append(now - self.older_than)
        if self.newer_than is not None:
            parts.append("created_at >= ?")
            params.append(now - self.newer_than)
        if self.never_hit:
            parts.append("hits = 0")
        if self.expired:
            if "expires_at" not in columns:
                raise UsageError("this cache file has no expires_at column, so nothing has a TTL")
            parts.append("expires_at IS NOT NULL AND expires_at <= ?")
            params.append(now)
        return (" AND ".join(parts) or "1"), params


def parse_duration(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"12h"``, ``"7d"`` or ``"2w"``."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"not a duration: {text!r} (use a number with s, m, h, d or w)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def entry_columns(store: Store) -> list[str]:
    """The columns of ``entries`` in this file, in table order (other versions add columns)."""
    rows = store.connection().execute("PRAGMA table_info(entries)").fetchall()
    return [str(row[1]) for row in rows]


def ensure_views(store: Store) -> None:
    """Create the read-only views for ``sqlite3``/Datasette users (times as UTC datetimes)."""
    with store.transaction() as conn:
        for name, select in VIEWS.items():
            conn.execute(f"CREATE VIEW IF NOT EXISTS {name} AS {select}")


def stats(store: Store) -> dict[str, Any]:
    """File-wide numbers from SQLite alone: no model, no index."""
    conn = store.connection()
    entries, embedded, scopes, namespaces, oldest, newest = conn.execute(
        "SELECT count(*), count(embedding), count(DISTINCT scope), count(DISTINCT namespace), "
        "min(created_at), max(created_at) FROM entries"
    ).fetchone()
    settings = store.settings()
    counters = store.counters()
    exact, semantic = counters.get("exact_hits", 0), counters.get("semantic_hits", 0)
    misses = counters.get("misses", 0)
    lookups = exact + semantic + misses
    return {
        "file": str(store.path) if store.path else ":memory:",
        "file_bytes": _file_bytes(store),
        "format_version": settings.get("format_version"),
        "embedder_name": settings.get("embedder_name"),
        "embedder_dimension": settings.get("embedder_dimension"),
        "entries": entries,
        "embedded": embedded,
        "exact_only": entries - embedded,
        "scopes": scopes,
        "namespaces": namespaces,
        "exact_hits": exact,
        "semantic_hits": semantic,
        "misses": misses,
        "hit_rate": round((exact + semantic) / lookups, 4) if lookups else 0.0,
        "tokens_avoided": counters.get("tokens_avoided", 0),
        "oldest_entry": oldest,
        "newest_entry": newest,
    }


def list_entries(
    store: Store, flt: EntryFilter | None = None, *, sort: str = "recent", limit: int | None = 50
) -> list[dict[str, Any]]:
    """Entries matching ``flt``: ``recent`` = latest hit or creation first, ``hits`` = most hit."""
    order = {
        "recent": "max(coalesce(last_hit_at, 0), created_at) DESC, id DESC",
        "hits": "hits DESC, id DESC",
        "created": "created_at DESC, id DESC",
        "id": "id",
    }.get(sort)
    if order is None:
        raise UsageError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    where, params = (flt or EntryFilter()).where(entry_columns(store))
    sql = (
        "SELECT id, scope, namespace, model, schema_name, prompt, hits, total_tokens, "
        "embedding IS NOT NULL AS embedded, created_at, last_hit_at "
        f"FROM entries WHERE {where} ORDER BY {order}"
    )
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    cursor = store.connection().execute(sql, params)
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    for row in rows:
        row["embedded"] = bool(row["embedded"])
    return rows


def get_entry(store: Store, entry_id: int) -> dict[str, Any]:
    """Every column of one entry; the embedding blob is summarized as its dimension and norm."""
    cursor = store.connection().execute("SELECT * FROM entries WHERE id = ?", (entry_id,))
    row = cursor.fetchone()
    if row is None:
        raise EntryNotFoundError(f"no entry with id {entry_id}")
    entry = dict(zip([d[0] for d in cursor.description], row, strict=True))
    blob = entry.get("embedding")
    if isinstance(blob, bytes):
        vector = np.frombuffer(blob[: len(blob) // 4 * 4], dtype="<f4")
        entry["embedding"] = {"dimension": len(vector), "norm": float(np.linalg.norm(vector))}
    return entry


def load_model_class(spec: str) -> type[BaseModel]:
    """Import ``"package.module:Class"`` (no eval); the class must be a Pydantic model."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"expected module:Class, got {spec!r}")
    if "" not in sys.path:  # as `python -m` does, so a model defined next to the user is found
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot import {spec}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise UsageError(f"{spec} is not a Pydantic model class")
    return obj


def prune(
    store: Store,
    flt: EntryFilter,
    *,
    invalid_for: type[BaseModel] | None = None,
    dry_run: bool = False,
) -> list[int]:
    """Delete the entries matching ``flt`` (and, with ``invalid_for``, whose stored JSON no
    longer validates against that class); return their ids.

    ``invalid_for`` only looks at entries of its own schema title unless ``flt`` names a schema,
    since an entry of another schema would never validate and must not be deleted for that.
    Validation uses the strictness recorded in the entry's request, without a context.
    """
    if flt.is_empty() and invalid_for is None:
        raise UsageError("prune needs at least one criterion (age, scope, schema, never-hit, ...)")
    if invalid_for is not None and flt.schema_name is None:
        flt = dataclasses.replace(flt, schema_name=schema_fingerprint(invalid_for)[1])
    where, params = flt.where(entry_columns(store))
    with store.transaction() as conn:
        rows = conn.execute(
            f"SELECT id, response_json, request_json FROM entries WHERE {where} ORDER BY id",
            params,
        ).fetchall()
        ids = [int(r[0]) for r in rows if invalid_for is None or not _validates(invalid_for, r)]
        if not dry_run:
            _delete_ids(conn, ids)
    return ids


def vacuum(store: Store) -> dict[str, int]:
    """Reclaim the space of deleted entries. VACUUM cannot run inside a transaction, so it is the
    one write here outside ``store.transaction()``; SQLite makes it atomic on its own."""
    before = _file_bytes(store)
    conn = store.connection()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"bytes_before": before, "bytes_after": _file_bytes(store)}


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


# Row checks run in SQL: (name, the rows that fail, the repair applied to them with fix=True).
_ROW_CHECKS: tuple[tuple[str, str, str | None], ...] = (
    ("answer JSON", "json_valid(response_json) = 0", "DELETE FROM entries WHERE id IN ({})"),
    (
        "completion JSON",
        "(raw_json IS NOT NULL AND json_valid(raw_json) = 0) "
        "OR (usage_json IS NOT NULL AND json_valid(usage_json) = 0)",
        "UPDATE entries SET raw_json = CASE WHEN json_valid(raw_json) THEN raw_json END, "
        "usage_json = CASE WHEN json_valid(usage_json) THEN usage_json END WHERE id IN ({})",
    ),
    (
        "scopes",  # a scope is a hash of namespace, model and schema among others: never mixed
        "scope IN (SELECT scope FROM entries GROUP BY scope HAVING count(DISTINCT namespace "
        "|| '|' || coalesce(model, '') || '|' || schema_name) > 1)",
        None,
    ),
)
_NULL_EMBEDDINGS = "UPDATE entries SET embedding = NULL WHERE id IN ({})"


def check(store: Store, fix: bool = False) -> CheckReport:
    """Verify the file: SQLite integrity, settings, every embedding blob, JSON columns, scopes,
    and that the per-scope indexes derive from SQLite with every valid vector.

    With ``fix`` (one transaction): a broken embedding (wrong size, NaN/inf, not unit length) is
    set to NULL, so the entry stays served by the exact tier; an entry whose answer is not JSON is
    deleted; a damaged raw completion or usage is set to NULL; a missing dimension setting is
    recorded from the blobs. The FAISS index lives in memory, so every cache opened afterwards
    rebuilds it from the repaired rows; a process that has the file open keeps its own index.
    """
    conn = store.connection()
    settings = store.settings()
    integrity = [str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall()]
    version, name = settings.get("format_version"), settings.get("embedder_name")
    findings = [
        Finding("sqlite integrity", integrity == ["ok"], "; ".join(integrity[:5])),
        Finding("format version", version == str(FORMAT_VERSION), f"{version}"),
        Finding("embedder name", name is not None, name or "not recorded"),
    ]
    repairs: list[tuple[str, list[Any]]] = []  # run in one transaction when fixing
    rows = conn.execute("SELECT id, embedding FROM entries WHERE embedding IS NOT NULL").fetchall()
    sizes = Counter(len(b) for _, b in rows if isinstance(b, bytes))
    recorded = settings.get("embedder_dimension")
    dimension = int(recorded) if recorded else (sizes.most_common(1)[0][0] // 4 if sizes else None)
    if recorded or dimension is None:
        findings.append(Finding("embedder dimension", True, recorded or "none yet (no embeddings)"))
    else:  # only recorded on a cache's first semantic lookup; the blobs tell it meanwhile
        detail = f"not recorded; blobs say {dimension}"
        findings.append(Finding("embedder dimension", False, detail, int(fix)))
        record = "INSERT OR IGNORE INTO settings VALUES ('embedder_dimension', ?)"
        repairs.append((record, [str(dimension)]))

    bad = _bad_embeddings(rows, dimension)
    problems: list[tuple[str, list[int], str, str | None]] = [
        ("embeddings", bad, f"{len(rows)} checked, {len(bad)} broken", _NULL_EMBEDDINGS)
    ]
    for label, condition, repair in _ROW_CHECKS:
        ids = _ids_where(conn, condition)
        problems.append((label, ids, f"{len(ids)} failing", repair))
    for label, ids, detail, repair in problems:
        fixed = len(ids) if fix and repair else 0
        findings.append(Finding(label, not ids, detail + _ids(ids), fixed))
        if repair:
            repairs += [(repair.format(_marks(chunk)), list(chunk)) for chunk in _chunks(ids)]
    if dimension is not None:
        findings.append(_index_finding(store, dimension, sizes[dimension * 4]))
    if fix and repairs:
        with store.transaction() as conn:
            for statement, params in repairs:
                conn.execute(statement, params)
    n = stats(store)
    counts = f"{n['entries']} entries, {n['embedded']} embedded, {n['scopes']} scopes"
    findings.append(Finding("counts", True, counts))
    return CheckReport(findings)


@dataclass(frozen=True)
class Neighbour:
    """A stored entry near a query text, with the verdict the cache would reach on similarity
    alone (a served hit also needs the stored JSON to validate against the response model)."""

    entry_id: int
    similarity: float
    verdict: str
    threshold: float
    scope: str
    namespace: str
    model: str | None
    schema_name: str
    prompt: str | None


def scopes(store: Store, flt: EntryFilter | None = None) -> list[dict[str, Any]]:
    """The scopes holding entries that match ``flt``, with their entry and hit counts."""
    where, params = (flt or EntryFilter()).where(entry_columns(store))
    cursor = store.connection().execute(
        "SELECT scope, namespace, model, schema_name, count(*) AS entries, "
        f"count(embedding) AS embedded, sum(hits) AS hits FROM entries WHERE {where} "
        "GROUP BY scope, namespace, model, schema_name ORDER BY entries DESC, scope",
        params,
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def nearest(
    store: Store,
    embedder: Embedder,
    text: str,
    *,
    threshold: float | None = None,
    flt: EntryFilter | None = None,
    k: int = 5,
) -> list[Neighbour]:
    """The ``k`` entries most similar to ``text`` across the scopes matching ``flt``, best first.

    Each scope is searched in its own index, as the cache does; across scopes this only shows
    how close the text comes, since a real request is looked up in exactly one scope. Without
    ``threshold`` each verdict uses the threshold the cache would apply: the one persisted for
    the scope, else for the schema, else for the file, else ``DEFAULT_THRESHOLD``.
    """
    from semcache.index import VectorIndex

    persisted = _persisted_thresholds(store)

    def cutoff(scope: str, schema_name: str) -> float:
        if threshold is not None:
            return threshold
        for target in (f"scope:{scope}", f"schema:{schema_name}", "default"):
            if target in persisted:
                return persisted[target]
        return DEFAULT_THRESHOLD

    info = {s["scope"]: s for s in scopes(store, flt)}
    fits = embedder.fits(text)
    vector = embedder.embed([text])[0]
    index = VectorIndex(embedder.dimension)
    found: list[tuple[float, int, str]] = []
    for scope in info:
        ids, vectors = store.vectors_since(scope, 0, index.dimension)
        index.add(scope, ids, vectors)
        found += [(s, i, scope) for i, s in index.search(scope, vector, k)]
    found.sort(key=lambda t: (-t[0], t[1]))
    prompts = dict(
        store.connection()
        .execute(
            f"SELECT id, prompt FROM entries WHERE id IN ({_marks(found[:k])})",
            [i for _, i, _ in found[:k]],
        )
        .fetchall()
    )
    limits = {scope: cutoff(scope, info[scope]["schema_name"]) for _, _, scope in found[:k]}
    return [
        Neighbour(
            entry_id=i,
            similarity=round(s, 4),
            verdict=("hit" if s >= limits[scope] else "miss") if fits else "miss (too long)",
            threshold=limits[scope],
            scope=scope,
            namespace=info[scope]["namespace"],
            model=info[scope]["model"],
            schema_name=info[scope]["schema_name"],
            prompt=prompts.get(i),
        )
        for s, i, scope in found[:k]
    ]


# -- helpers ------------------------------------------------------------------------------------


def _persisted_thresholds(store: Store) -> dict[str, float]:
    """Thresholds saved in the file by target (``scope:…``, ``schema:…``, ``default``)."""
    conn = store.connection()
    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'thresholds'").fetchone():
        return {}
    rows = conn.execute("SELECT target, threshold FROM thresholds").fetchall()
    return {str(target): float(value) for target, value in rows}


def _validates(cls: type[BaseModel], row: tuple[Any, ...]) -> bool:
    try:
        strict = json.loads(row[2]).get("strict", True)
    except (ValueError, AttributeError):
        strict = True
    try:
        cls.model_validate_json(row[1], strict=bool(strict))
    except Exception:  # ValidationError, or a validator raising anything else: not servable
        return False
    return True


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


def _index_finding(store: Store, dimension: int, expected: int) -> Finding:
    """Build every scope's index from SQLite, as a cache does on open: it must hold every blob
    of the right size (NaN or non-unit vectors too, until a fix drops them)."""
    from semcache.index import VectorIndex

    index = VectorIndex(dimension)
    all_scopes = [r[0] for r in store.connection().execute("SELECT DISTINCT scope FROM entries")]
    for scope in all_scopes:
        index.add(scope, *store.vectors_since(scope, 0, dimension))
    detail = f"{len(all_scopes)} scopes rebuilt from SQLite, {index.size()} vectors"
    return Finding("index", index.size() == expected, detail + "; caches rebuild on open")


def _ids_where(conn: Any, condition: str) -> list[int]:
    return [int(r[0]) for r in conn.execute(f"SELECT id FROM entries WHERE {condition}")]


def _delete_ids(conn: Any, ids: list[int]) -> None:
    for chunk in _chunks(ids):
        conn.execute(f"DELETE FROM entries WHERE id IN ({_marks(chunk)})", chunk)


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _marks(items: list[Any]) -> str:
    return ",".join("?" * len(items))


def _ids(ids: list[int]) -> str:
    """The first ids of a finding, for the report: " (ids 3, 7, ...)"."""
    listed = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
    return f" (ids {listed})" if ids else ""


def _file_bytes(store: Store) -> int:
    """Size of the database and its WAL on disk (pages in use for a memory database)."""
    if store.path is None:
        conn = store.connection()
        return int(
            conn.execute(
                "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size"
            ).fetchone()[0]
        )
    paths = (store.path, store.path.with_name(store.path.name + "-wal"))
    return sum(p.stat().st_size for p in paths if p.exists())
