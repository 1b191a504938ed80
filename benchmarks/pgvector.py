"""Semantic lookups searched in PostgreSQL with pgvector vs the local FAISS replica, same server.

One private PostgreSQL 16 with pgvector (the ``pgserver`` wheel, as in tests/pgvector_server.py)
is started for the run. For each size, one schema is filled with N entries in one scope (the
384-dimension stand-in embedder of fleet.py: random unit vectors, so that filling is quick and the
embedding costs ~20 us, i.e. is excluded), and two caches are opened on it in one process: the
default (``search="local"``: a FAISS index caught up from the database) and
``search="pgvector"``. Then, measured interleaved, in turn first:

    enable       the pgvector cache's first lookup on the filled cache: migration 5 (the
                 generated vector column, the table rewritten) and its HNSW index built
    local build  the local cache's first lookup: every vector read and the FAISS index built
    semantic     a semantic hit through ``cache.lookup`` (paraphrase of a stored item; the
                 candidates re-checked against the database in both cases)
    candidates   the search alone: ``VectorIndex.search`` vs ``PostgresStore.nearest``
                 (random unit-vector queries, top 4)
    agreement    paraphrases served the same entry by both; top-4 candidates of random queries
                 equal to the exact top 4 (numpy over every stored vector)

    python benchmarks/pgvector.py --entries 10000 100000 --out benchmarks/results/pgvector.md
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from fleet import Answer, Embedder384, paraphrase, percentile, question
from machine import describe

from semcache import SemanticCache
from semcache.storage.postgres import PostgresStore

QUERIES = 1000
RANDOM_QUERIES = 300


def open_cache(dsn: str, search: str) -> Any:
    return SemanticCache(
        dsn,
        embedder=Embedder384(),
        verifier=None,
        threshold=0.9,
        search=search,  # type: ignore[arg-type]
    )


def run(server: Any, entries: int) -> dict[str, Any]:
    import psycopg

    schema = f"semcache_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.get_uri(), autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{server.get_uri()}&options=-csearch_path%3D{schema}"
    result: dict[str, Any] = {"entries": entries}
    try:
        with open_cache(dsn, "local") as local:
            t = time.perf_counter()
            items = ((question(i), Answer(text=f"answer {i}")) for i in range(entries))
            local.store_many(items, Answer, model="m", batch_size=1000)
            result["fill_s"] = time.perf_counter() - t
            with open_cache(dsn, "pgvector") as pgv:
                store = pgv.pipeline.store
                assert isinstance(store, PostgresStore) and store.pgvector is not None
                result["version"] = store.pgvector.version
                t = time.perf_counter()
                pgv.lookup(paraphrase(0), Answer, model="m")  # adds the column and its index
                result["enable_s"] = time.perf_counter() - t
                t = time.perf_counter()
                local.lookup(paraphrase(0), Answer, model="m")
                local.pipeline.scopes.wait()  # from HNSW size on, built in the background
                result["local_build_s"] = time.perf_counter() - t
                hit = local.lookup(paraphrase(0), Answer, model="m")
                assert hit is not None
                result.update(compare(local, pgv, store, hit.scope, entries))
    finally:
        with psycopg.connect(server.get_uri(), autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    return result


def compare(local: Any, pgv: Any, store: PostgresStore, scope: str, entries: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    hnsw_scans = _hnsw_scans(store)
    times: dict[str, list[float]] = {"local": [], "pgvector": []}
    same = wrong = 0
    missed = {"local": 0, "pgvector": 0}
    for n, item in enumerate(rng.integers(0, entries, QUERIES)):
        served = {}
        for name in ("local", "pgvector") if n % 2 else ("pgvector", "local"):
            cache = local if name == "local" else pgv
            t = time.perf_counter()
            hit = cache.lookup(paraphrase(int(item)), Answer, model="m")
            times[name].append(time.perf_counter() - t)
            served[name] = hit
            if hit is None:
                missed[name] += 1
            elif hit.value.text != f"answer {item}":
                wrong += 1
        a, b = served["local"], served["pgvector"]
        same += (a is None and b is None) or (
            a is not None and b is not None and a.entry_id == b.entry_id
        )
    hnsw_scans = _hnsw_scans(store) - hnsw_scans
    # The search alone, on random unit vectors (nothing near: the hardest case for a graph).
    loaded = store.changes(scope, 0, 384)
    ids, vectors = loaded.ids, loaded.vectors
    index = local.pipeline.scopes.index
    queries = rng.standard_normal((RANDOM_QUERIES, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    search: dict[str, list[float]] = {"local": [], "pgvector": []}
    recall = {"local": 0, "pgvector": 0}
    for n, query in enumerate(queries):
        exact = set(ids[np.argsort(-(vectors @ query))[:4]].tolist())
        for name in ("local", "pgvector") if n % 2 else ("pgvector", "local"):
            t = time.perf_counter()
            if name == "local":
                found = index.search(scope, query, 4)
            else:
                found = store.nearest(scope, query, 4, time.time())
            search[name].append(time.perf_counter() - t)
            recall[name] += len(exact & {i for i, _ in found})
    return {
        "semantic": {k: (percentile(v, 0.5), percentile(v, 0.99)) for k, v in times.items()},
        "search": {k: (percentile(v, 0.5), percentile(v, 0.99)) for k, v in search.items()},
        "recall": {k: v / (4 * RANDOM_QUERIES) for k, v in recall.items()},
        "same": same / QUERIES, "wrong": wrong, "missed": missed, "hnsw_scans": hnsw_scans,
        "local_kind": index.kind(scope),
    }  # fmt: skip


def _hnsw_scans(store: PostgresStore) -> int:
    """Scans of the HNSW index so far (a session publishes its counts within a second or so
    of going idle: wait that long first)."""
    time.sleep(1.5)
    with store.reading() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT coalesce(sum(idx_scan), 0) FROM pg_stat_user_indexes "
            "WHERE indexrelname = 'entries_embedding_hnsw' AND schemaname = current_schema()"
        ).fetchone()
    return int(row[0])


def table(results: list[dict[str, Any]], load_before: float) -> str:
    sizes = " ".join(str(r["entries"]) for r in results)
    lines = [
        f"`python benchmarks/pgvector.py --entries {sizes}`, {time.strftime('%Y-%m-%d')}, one "
        f"private PostgreSQL 16 (pgserver) with pgvector {results[0]['version']} on a Unix "
        f"socket, {os.cpu_count()} cores shared with other work (load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end).",
        "",
        *describe(["numpy", "faiss-cpu", "psycopg", "pgserver"]),
        "",
        "| entries in one scope | " + " | ".join(f"{r['entries']:,}" for r in results) + " |",
        "|---|" + "---:|" * len(results),
    ]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    def pair(r: dict[str, Any], group: str, name: str) -> str:
        p50, p99 = r[group][name]
        return f"{p50:.2f} / {p99:.2f} ms"

    row("fill with store_many (entries/s)", [f"{r['entries'] / r['fill_s']:,.0f}" for r in results])
    row("pgvector: enable on the filled cache (column + HNSW index), first lookup",
        [f"{r['enable_s']:.1f} s" for r in results])  # fmt: skip
    row("local: first lookup, index built (kind)",
        [f"{r['local_build_s']:.1f} s ({r['local_kind']})" for r in results])  # fmt: skip
    row(
        "semantic hit, local FAISS replica, p50 / p99",
        [pair(r, "semantic", "local") for r in results],
    )
    row("semantic hit, pgvector in the database, p50 / p99",
        [pair(r, "semantic", "pgvector") for r in results])  # fmt: skip
    row("pgvector / local, semantic hit p50",
        [f"{r['semantic']['pgvector'][0] / r['semantic']['local'][0]:.1f}x" for r in results])  # fmt: skip
    row("search alone, local FAISS, p50 / p99", [pair(r, "search", "local") for r in results])
    row("search alone, pgvector (round trip included), p50 / p99",
        [pair(r, "search", "pgvector") for r in results])  # fmt: skip
    row(f"paraphrases served the same entry by both ({QUERIES:,})",
        [f"{r['same']:.1%}" for r in results])  # fmt: skip
    row("wrong answers (both caches)", [str(r["wrong"]) for r in results])
    row("paraphrases missed, local / pgvector",
        [f"{r['missed']['local']} / {r['missed']['pgvector']}" for r in results])  # fmt: skip
    row(f"random queries: top 4 = exact top 4, local ({RANDOM_QUERIES})",
        [f"{r['recall']['local']:.1%}" for r in results])  # fmt: skip
    row(f"random queries: top 4 = exact top 4, pgvector ({RANDOM_QUERIES})",
        [f"{r['recall']['pgvector']:.1%}" for r in results])  # fmt: skip
    row("lookups answered by the HNSW index (pg_stat_user_indexes)",
        [f"{r['hnsw_scans']:,} of {QUERIES:,}" for r in results])  # fmt: skip
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = (
    "The local replica is an exact (flat) index below 20,000 entries and an HNSW graph above "
    "(M=48, efConstruction=128, efSearch=128); pgvector's HNSW index has pgvector's defaults "
    "(m=16, ef_construction=64), searched with hnsw.ef_search=128. Both caches re-check every "
    "candidate against the row, so a worse proposal costs a hit (a miss), never a wrong answer. "
    "Random unit-vector queries have no near neighbour, the hardest case for a graph: they show "
    "the search's recall, not the cache's hits. Other work shared the 2 cores (load average "
    "above): the p99s and the build times include it."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, nargs="+", default=[10_000])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR in a container
        warnings.simplefilter("ignore")
        import pgserver

        load_before = os.getloadavg()[0]
        folder = Path(tempfile.mkdtemp(prefix="semcache-pgvector-")) / "data"
        server = pgserver.get_server(folder, cleanup_mode="delete")
    try:
        results = [run(server, n) for n in args.entries]
    finally:
        server.cleanup()
        folder.parent.rmdir()
    text = table(results, load_before)
    print(text)
    if args.out:
        args.out.write_text("# pgvector vs the local replica\n\n" + text, encoding="utf-8")


if __name__ == "__main__":
    main()
