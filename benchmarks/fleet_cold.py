"""Cold start of a fleet node from a prebuilt snapshot, against building (``fleet.py --cold-start``).

One private schema holds N entries in one scope:

    probes      ``PROBES`` real answered requests ("Fleet item i?"), stored through
                ``SemanticCache.store_many`` with the 384-dimension stand-in embedder of fleet.py,
                so that a paraphrase lookup has one right answer
    synthetic   the rest, written by binary COPY into ``entries`` in transactions of ``BATCH``
                rows (the feed trigger numbers every row as it does for any insert); their
                vectors are clustered, anisotropic unit vectors (below), never looked up

Then, each in a new process:

    build       a node with no snapshot: first lookup -> first semantic hit (reading every
                vector, building the HNSW graph in the background), then the snapshot it
                publishes (export: the file written under the index's lock; upload: into
                PostgreSQL) and its size
    changes     ``--after`` probes added and as many entries deleted (probes among them) after
                the snapshot, through the cache and the store: the feed a new node applies
    snapshot    ``--nodes`` new nodes at once: first lookup -> first semantic hit, split into
                download, install (checksum, FAISS deserialization, checks) and catch-up; then
                lookups of stored, added and deleted probes (a deleted probe answered, or any
                answer not its own, counts as wrong)

Synthetic vectors: ``normalize(0.45 * mean + topic + 0.8 * noise)`` with one fixed mean
direction, ``TOPICS`` topic centres and per-row Gaussian noise (each of norm ~1), which gives a
mean cosine between unrelated rows of about 0.11 and about 0.65 within a topic, roughly what
all-MiniLM-L6-v2 shows on sentences (uniformly random vectors would make the graph build harder
and less realistic).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from fleet import Answer, open_cache, paraphrase, question, rss_mb

PROBES = 2_000
BATCH = 5_000
TOPICS = 5_000
DIMENSION = 384


def synthetic(start: int, count: int) -> np.ndarray:
    """Rows ``start .. start+count`` of the synthetic set (deterministic per batch)."""
    base = np.random.default_rng(0)
    mean = base.standard_normal(DIMENSION)
    mean /= np.linalg.norm(mean)
    topics = base.standard_normal((TOPICS, DIMENSION)) / np.sqrt(DIMENSION)
    rng = np.random.default_rng(start + 1)
    noise = rng.standard_normal((count, DIMENSION)) / np.sqrt(DIMENSION)
    rows = 0.45 * mean + topics[rng.integers(0, TOPICS, count)] + 0.8 * noise
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype("<f4")


def fill(dsn: str, server: str, entries: int) -> tuple[str, float, float]:
    """Probes through the cache, the rest by COPY; returns the scope and both fill times."""
    import psycopg

    began = time.perf_counter()
    with open_cache(dsn) as cache:
        items = ((question(i), Answer(text=f"answer {i}")) for i in range(PROBES))
        cache.store_many(items, Answer, model="m", batch_size=1000)
        exact = cache.lookup(question(0), Answer, model="m")
        assert exact is not None
        scope = exact.scope
    probes_s = time.perf_counter() - began
    began = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        template = conn.execute(
            "SELECT namespace, model, schema_name, request_json FROM entries WHERE scope = %s "
            "LIMIT 1",
            (scope,),
        ).fetchone()
        columns = "exact_key, scope, namespace, model, schema_name, prompt, request_json, "
        columns += "response_json, total_tokens, embedding, created_at"
        types = ["text"] * 8 + ["int8", "bytea", "float8"]
        for start in range(PROBES, entries, BATCH):
            count = min(BATCH, entries - start)
            vectors = synthetic(start, count)
            now = time.time()
            with conn.transaction(), conn.cursor() as cursor:
                copy_sql = f"COPY entries ({columns}) FROM STDIN (FORMAT BINARY)"
                with cursor.copy(copy_sql) as copy:
                    copy.set_types(types)
                    for k in range(count):
                        i = start + k
                        copy.write_row((
                            f"synthetic-{i}", scope, *template[:3], f"Synthetic request {i}",
                            template[3], f'{{"text": "answer {i}"}}', 16, vectors[k].tobytes(),
                            now,
                        ))  # fmt: skip
            print(f"  filled {start + count:,} entries", flush=True)
    return scope, probes_s, time.perf_counter() - began


def first_hit(cache: Any, scope: str) -> dict[str, Any]:
    """Time from a node's first lookup to its first semantic hit, and how it got there."""
    began = time.perf_counter()
    miss = cache.lookup(paraphrase(0), Answer, model="m")  # starts the load or the build
    scopes = cache.pipeline.scopes
    assert scopes.wait(scope, timeout=3600)
    hit = cache.lookup(paraphrase(0), Answer, model="m")
    seconds = time.perf_counter() - began
    start = scopes.cold_starts[scope]
    return {
        "seconds": seconds, "source": start.source, "refused": start.refused,
        "download_s": start.download_s, "install_s": start.install_s,
        "catch_up_s": start.catch_up_s, "changes": start.changes,
        "wrong": int(miss is not None) + int(hit is None or hit.value.text != "answer 0"),
    }  # fmt: skip


def build_node(dsn: str, scope: str, out: Any) -> None:
    with open_cache(dsn) as cache:
        result = first_hit(cache, scope)
        result["rss_mb"] = rss_mb()
        scopes = cache.pipeline.scopes
        assert scopes.wait(scope, timeout=3600, publishing=True)
        published = scopes.published.get(scope)
        if published is not None:
            result.update(export_s=published.export_s, upload_s=published.upload_s,
                          bytes=published.bytes)  # fmt: skip
        out.put(result)


def snapshot_node(
    dsn: str, scope: str, added: list[int], deleted: list[int], go: Any, out: Any
) -> None:
    with open_cache(dsn) as cache:
        go.wait()
        result = first_hit(cache, scope)
        result["rss_mb"] = rss_mb()
        result["missed"], result["wrong_items"] = [], []
        for item in [*range(0, PROBES, 20), *added[::10], *deleted]:
            hit = cache.lookup(paraphrase(item), Answer, model="m")
            if item in deleted and hit is not None:
                result["wrong_items"].append((item, hit.value.text))
            elif item not in deleted and hit is None:
                result["missed"].append(item)
            elif hit is not None and hit.value.text != f"answer {item}":
                result["wrong_items"].append((item, hit.value.text))
        result["wrong"] += len(result["wrong_items"])
        out.put(result)


def change_after_snapshot(dsn: str, after: int) -> tuple[list[int], list[int]]:
    """Add ``after`` probes; delete as many entries (a tenth of them probes, stored before)."""
    import psycopg

    added = list(range(PROBES, PROBES + after))
    with open_cache(dsn) as cache:
        items = ((question(i), Answer(text=f"answer {i}")) for i in added)
        cache.store_many(items, Answer, model="m", batch_size=1000)
    deleted = list(range(1, PROBES, 20))[: max(1, after // 10)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "DELETE FROM entries WHERE prompt = ANY(%s)",
            ([question(i)[0]["content"] for i in deleted],),
        )
        conn.execute(
            "DELETE FROM entries WHERE id IN (SELECT id FROM entries WHERE exact_key LIKE "
            "'synthetic-%%' ORDER BY id LIMIT %s)",
            (after - len(deleted),),
        )
    return added, deleted


def cold_start(server: str, entries: int, nodes: int, after: int, out_path: Path | None) -> None:
    import psycopg

    schema = f"semcache_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{server}?options=-csearch_path%3D{schema}"
    context = multiprocessing.get_context("spawn")
    try:
        scope, probes_s, copy_s = fill(dsn, server, entries)
        print(f"fill: {PROBES:,} probes in {probes_s:.1f} s, the rest in {copy_s:.1f} s")
        out = context.Queue()
        proc = context.Process(target=build_node, args=(dsn, scope, out))
        proc.start()
        built = out.get(timeout=7200)
        proc.join()
        print("build node:", built, flush=True)
        added, deleted = change_after_snapshot(dsn, after)
        go = context.Barrier(nodes)
        procs = [
            context.Process(target=snapshot_node, args=(dsn, scope, added, deleted, go, out))
            for _ in range(nodes)
        ]
        for proc in procs:
            proc.start()
        loaded = [out.get(timeout=3600) for _ in procs]
        for proc in procs:
            proc.join()
        print("snapshot nodes:", loaded, flush=True)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    report(entries, nodes, after, probes_s, copy_s, built, loaded, out_path)


def report(
    entries: int,
    nodes: int,
    after: int,
    probes_s: float,
    copy_s: float,
    built: dict[str, Any],
    loaded: list[dict[str, Any]],
    out_path: Path | None,
) -> None:
    def median(key: str) -> float:
        return statistics.median(float(r[key]) for r in loaded)

    sources = sorted({r["source"] for r in loaded})
    lines = [
        f"`python benchmarks/fleet.py --cold-start --entries {entries} --nodes {nodes} "
        f"--after {after}`, {time.strftime('%Y-%m-%d')}, PostgreSQL 15 on loopback, "
        f"{os.cpu_count()} cores shared with other work (load average {os.getloadavg()[0]:.1f} "
        "at the end), float32 HNSW (M=48).",
        "",
        f"| cold start, {entries:,} entries in one scope | value |",
        "|---|---:|",
        f"| fill: {PROBES:,} probes through store_many / the rest by binary COPY | "
        f"{probes_s:.1f} s / {copy_s:.1f} s |",
        f"| cold start by building (no snapshot; 1 node): first lookup to first semantic hit | "
        f"{built['seconds']:.1f} s |",
        f"| snapshot publish: export (index lock held) / upload to PostgreSQL | "
        f"{built.get('export_s', float('nan')):.1f} s / {built.get('upload_s', float('nan')):.1f}"
        " s |",
        f"| snapshot size | {built.get('bytes', 0) / 2**20:,.0f} MB |",
        f"| changes after the snapshot, applied from the feed | +{after:,} / -{after:,} entries |",
        f"| cold start from the snapshot ({nodes} node{'s' * (nodes > 1)} at once, median): first "
        f"lookup to first semantic hit | **{median('seconds'):.1f} s** |",
        f"| of which download / checksum + deserialize + checks / feed catch-up | "
        f"{median('download_s'):.1f} / {median('install_s'):.1f} / {median('catch_up_s'):.1f} s |",
        f"| started from | {', '.join(sources)} |",
        f"| resident memory per node: built / from snapshot | {built['rss_mb']:.0f} / "
        f"{median('rss_mb'):.0f} MB |",
        f"| probes not found after the start (HNSW recall), of "
        f"{len(range(0, PROBES, 20)) + len(range(0, after, 10)) * nodes} looked up | "
        f"{sum(len(r['missed']) for r in loaded)} |",
        f"| wrong answers (stored, added and deleted probes) | "
        f"{built['wrong'] + sum(r['wrong'] for r in loaded)} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if out_path:
        with out_path.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
