"""What borrowing from the application's pool costs: a cache on a ``psycopg_pool.ConnectionPool``
against a cache on the URL, interleaved in one process on one schema.

A cache on a URL keeps one connection per thread; on a pool, each store call borrows a connection,
sets the cache's ``statement_timeout`` (one round trip, reading the owner's value back), runs its
statements and restores the owner's value (one more round trip) before giving it back
(``semcache/storage/postgres/pool.py``). Measured per lookup kind (exact hit, semantic hit with
the stand-in embedder of ``fleet.py``, miss) and for one bare ``SELECT 1`` through the store.

    python benchmarks/pool.py                 # 1,000 entries, 2,000 rounds: under a minute
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet import SERVER, Answer, Embedder384, paraphrase, percentile, question
from machine import describe

PACKAGES = ("psycopg", "psycopg-pool", "faiss-cpu", "numpy")


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def select_one(store: Any) -> None:
    with store.reading() as conn:
        conn.execute("SELECT 1").fetchone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "pool.md"))
    args = parser.parse_args()
    import psycopg
    from psycopg_pool import ConnectionPool

    from semcache import SemanticCache

    load_before = os.getloadavg()[0]
    schema = f"semcache_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{args.server}?options=-csearch_path%3D{schema}"
    times: dict[tuple[str, str], list[float]] = {}
    try:
        with (
            ConnectionPool(dsn, min_size=2, max_size=2, open=True) as pool,
            SemanticCache(dsn, embedder=Embedder384(), verifier=None, threshold=0.9) as url,
            SemanticCache(pool, embedder=Embedder384(), verifier=None, threshold=0.9) as pooled,
        ):
            items = ((question(i), Answer(text=f"answer {i}")) for i in range(args.entries))
            url.store_many(items, Answer, model="m", batch_size=1000)
            caches = {"URL": url, "pool": pooled}
            for cache in caches.values():  # both replicas built before timing
                assert cache.lookup(paraphrase(0), Answer, model="m") is not None
            rng = random.Random(7)
            kinds: dict[str, Callable[[Any, int], object]] = {
                "exact hit": lambda c, i: c.lookup(question(i), Answer, model="m"),
                "semantic hit": lambda c, i: c.lookup(paraphrase(i), Answer, model="m"),
                "miss": lambda c, i: c.lookup(question(i + 10**9), Answer, model="m"),
                "SELECT 1": lambda c, i: select_one(c.pipeline.store),
            }
            for _ in range(args.rounds):
                item = rng.randrange(args.entries)
                order = list(caches.items())
                rng.shuffle(order)
                for kind, call in kinds.items():
                    for name, cache in order:
                        times.setdefault((kind, name), []).append(
                            timed(lambda c=cache, f=call, i=item: f(c, i))  # type: ignore[misc]
                        )
            outages = {name: c.stats().store_outages for name, c in caches.items()}
    finally:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    lines = [
        "# A cache on the application's connection pool against one on the URL",
        "",
        f"`python benchmarks/pool.py --entries {args.entries} --rounds {args.rounds}`, "
        f"{time.strftime('%Y-%m-%d')}, PostgreSQL 15 on loopback, a pool of 2 connections, the "
        f"two caches interleaved in random order each round (load average {load_before:.1f} at "
        f"the start, {os.getloadavg()[0]:.1f} at the end; the machine was shared).",
        "",
        *describe(PACKAGES),
        "",
        "| call | URL p50 / p99 ms | pool p50 / p99 ms | pool p50 − URL p50 | ratio p50 |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in ("exact hit", "semantic hit", "miss", "SELECT 1"):
        url_t, pool_t = times[(kind, "URL")], times[(kind, "pool")]
        u50, p50 = statistics.median(url_t) * 1000, statistics.median(pool_t) * 1000
        lines.append(
            f"| {kind} | {u50:.3f} / {percentile(url_t, 0.99):.3f} | "
            f"{p50:.3f} / {percentile(pool_t, 0.99):.3f} | {p50 - u50:+.3f} | {p50 / u50:.2f} |"
        )
    lines += ["", f"Outages seen: {outages} (expected none)."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
