"""Row-level maintenance over a cache: stats, list, show, prune, vacuum, nearest.

Everything here works on a ``Rows`` store (a SQLite file or a PostgreSQL database: the same SQL,
written once, ``semcache.storage.base.Rows``) and never loads the embedding model (except
``nearest``, which is handed an embedder), so the CLI commands built on it start without importing
torch. Verifying and repairing a cache is ``semcache.ops.check``; the audit log is
``semcache.ops.audit_log``; which entries a listing or a prune applies to is an ``EntryFilter``
(``semcache.ops.entry_filter``; it and ``parse_duration`` can be imported from here too). Columns
are read from the catalog where a function carries whole rows, because the ``entries`` table grows
columns over time (``expires_at``, ...) and maintenance code must not silently drop them. All SQL
is parameterized; every write goes through ``store.transaction()``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from semcache.embedding.base import Embedder
from semcache.embedding.resolve import default_threshold
from semcache.errors import EntryNotFoundError, UsageError
from semcache.keys import schema_fingerprint
from semcache.ops.entry_filter import EntryFilter as EntryFilter
from semcache.ops.entry_filter import parse_duration as parse_duration
from semcache.settings import recorded_threshold
from semcache.storage.base import Rows
from semcache.storage.instructor_table import instructor_cache_stats

SORTS = ("recent", "hits", "created", "id")
_CHUNK = 500  # ids per DELETE/UPDATE statement, well under SQLite's parameter limit


def stats(store: Rows) -> dict[str, Any]:
    """Cache-wide numbers from the store alone: no model, no index.

    Besides the entries and counters: ``default_threshold``, what a scope without a threshold of
    its own is served at by a cache constructed without ``threshold=`` (the one persisted for the
    whole file, else the default of the embedding model the file records), how many scopes have a
    persisted threshold, the ``instructor_cache`` table of ``SQLiteCache`` (zeros when the file never used it), and, once
    shadow checks have run, ``shadow``: per scope, samples and agreements with the provider.
    """
    with store.reading() as conn:
        entries, embedded, scopes, namespaces, oldest, newest = conn.execute(
            "SELECT count(*), count(embedding), count(DISTINCT scope), count(DISTINCT namespace), "
            "min(created_at), max(created_at) FROM entries"
        ).fetchone()
    settings = store.settings()
    persisted = store.thresholds()
    counters = store.counters()
    exact, semantic = counters.get("exact_hits", 0), counters.get("semantic_hits", 0)
    misses = counters.get("misses", 0)
    lookups = exact + semantic + misses
    kind = "file" if store.dialect == "sqlite" else "database"
    numbers: dict[str, Any] = {
        kind: store.location,  # a database URL with its password replaced by ***
        f"{kind}_bytes": store.table_bytes(),
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
        "default_threshold": persisted.get(
            "default", default_threshold(settings.get("embedder_name"))
        ),
        "scope_thresholds": sum(t.startswith("scope:") for t in persisted),
        "oldest_entry": oldest,
        "newest_entry": newest,
    }
    for name, value in dataclasses.asdict(instructor_cache_stats(store)).items():
        numbers[f"instructor_cache_{name}"] = value  # entries, expired, hits, misses
    shadow = store.shadow_counts()
    if shadow:
        numbers["shadow"] = {
            scope: {"samples": n, "agreements": agreed} for scope, (n, agreed, _) in shadow.items()
        }
    return numbers


def list_entries(
    store: Rows,
    flt: EntryFilter | None = None,
    *,
    sort: str = "recent",
    limit: int | None = 50,
) -> list[dict[str, Any]]:
    """Entries matching ``flt``: ``recent`` = latest hit or creation first, ``hits`` = most hit."""
    order = {
        "recent": "CASE WHEN last_hit_at > created_at THEN last_hit_at ELSE created_at END DESC, "
        "id DESC",
        "hits": "hits DESC, id DESC",
        "created": "created_at DESC, id DESC",
        "id": "id",
    }.get(sort)
    if order is None:
        raise UsageError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    where, params = (flt or EntryFilter()).where(store.columns("entries"))
    sql = (
        "SELECT id, scope, namespace, model, schema_name, prompt, hits, total_tokens, "
        "embedding IS NOT NULL AS embedded, created_at, last_hit_at "
        f"FROM entries WHERE {where} ORDER BY {order}"
    )
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    rows = _dicts(store, sql, params)
    for row in rows:
        row["embedded"] = bool(row["embedded"])
    return rows


def get_entry(store: Rows, entry_id: int) -> dict[str, Any]:
    """Every column of one entry; the embedding blob is summarized as its dimension and norm."""
    found = _dicts(store, "SELECT * FROM entries WHERE id = ?", [entry_id])
    if not found:
        raise EntryNotFoundError(f"no entry with id {entry_id}")
    entry = found[0]
    entry.pop("embedding_vector", None)  # pgvector's copy of the embedding (search="pgvector")
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
    store: Rows,
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
    where, params = flt.where(store.columns("entries"))
    with store.transaction() as conn:
        rows = conn.execute(
            f"SELECT id, response_json, request_json FROM entries WHERE {where} ORDER BY id",
            params,
        ).fetchall()
        ids = [int(r[0]) for r in rows if invalid_for is None or not _validates(invalid_for, r)]
        if not dry_run:
            _delete_ids(conn, ids)
    return ids


def vacuum(store: Rows) -> dict[str, int]:
    """Reclaim the space of deleted entries. VACUUM cannot run inside a transaction, so it is the
    one write here outside ``store.transaction()``; each engine makes it atomic on its own.

    On SQLite the file is rewritten and shrinks. On PostgreSQL a plain ``VACUUM`` of the cache's
    tables makes dead rows' space reusable and gives back only empty pages at a table's end: the
    nodes keep reading and writing meanwhile, whereas ``VACUUM FULL`` would lock them out (run it
    yourself in a quiet hour if the tables must shrink). Tables the role does not own are skipped.
    """
    before = store.table_bytes()
    with store.reading() as conn:
        if store.dialect == "sqlite":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            present = set(_column(conn, _PG_TABLES_PRESENT, [list(_PG_TABLES)]))
            for table in _PG_TABLES:  # fixed names, never text from outside
                if table in present:
                    conn.execute(f"VACUUM (ANALYZE) {table}")
    return {"bytes_before": before, "bytes_after": store.table_bytes()}


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


def scopes(store: Rows, flt: EntryFilter | None = None) -> list[dict[str, Any]]:
    """The scopes holding entries that match ``flt``, with their entry and hit counts."""
    where, params = (flt or EntryFilter()).where(store.columns("entries"))
    rows = _dicts(
        store,
        "SELECT scope, namespace, model, schema_name, count(*) AS entries, "
        f"count(embedding) AS embedded, sum(hits) AS hits FROM entries WHERE {where} "
        "GROUP BY scope, namespace, model, schema_name ORDER BY entries DESC, scope",
        params,
    )
    for row in rows:  # PostgreSQL sums a bigint column to a numeric
        row["hits"] = None if row["hits"] is None else int(row["hits"])
    return rows


def nearest(
    store: Rows,
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
    the scope, else for the schema, else for the file, else the default of the embedding model the
    file records.
    """
    from semcache.index.vector_index import VectorIndex

    persisted = store.thresholds()
    fallback = recorded_threshold(store)

    def cutoff(scope: str, schema_name: str) -> float:
        if threshold is not None:
            return threshold
        for target in (f"scope:{scope}", f"schema:{schema_name}", "default"):
            if target in persisted:
                return persisted[target]
        return fallback

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
    prompts: dict[int, str | None] = {}
    if found:
        with store.reading() as conn:
            prompts = dict(
                conn.execute(
                    f"SELECT id, prompt FROM entries WHERE id IN ({_marks(found[:k])})",
                    [i for _, i, _ in found[:k]],
                ).fetchall()
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


def _dicts(store: Rows, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    """The rows of a query as dicts keyed by column name."""
    with store.reading() as conn:
        cursor = conn.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _column(conn: Any, sql: str, params: list[Any]) -> list[Any]:
    return [row[0] for row in conn.execute(sql, params).fetchall()]


# The PostgreSQL tables ``vacuum`` visits: those whose rows are deleted in bulk.
_PG_TABLES = ("entries", "feed", "audit", "near_misses", "vetoes", "instructor_cache")
_PG_TABLES_PRESENT = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname = ANY(?)"
)


def _delete_ids(conn: Any, ids: list[int]) -> None:
    for chunk in _chunks(ids):
        conn.execute(f"DELETE FROM entries WHERE id IN ({_marks(chunk)})", chunk)


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]


def _marks(items: list[Any]) -> str:
    return ",".join("?" * len(items))
