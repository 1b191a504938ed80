"""Scale: one scope of 1k / 100k / 1M entries in a real cache file, per kind of stored vectors.

For each size N it writes a real SemanticCache file (SQLite, under /tmp) with N entries in one
scope, then for each ``vectors`` choice of the FAISS index (float32, fp16, sq8) measures:

    lookups     the whole ``cache.lookup`` of a semantic hit and of a miss, p50/p95/p99; the
                embedder is a table lookup (``LookupEmbedder``), so embedding is excluded
    recall      the index's first candidate (recall@1), and its four candidates (recall@4: what
                the cache re-scores against SQLite) against exact brute-force search in numpy;
                also stored vectors as queries: an entry the graph cannot reach fails there
    rebuild     no saved index: every vector read from SQLite and the index built (``_catch_up``)
    save        writing the index file (``VectorIndex.save``)
    cold open   a new process: ``SemanticCache(path)`` and its first semantic lookup with the
                index file saved before (imports excluded; the index load and the periodic
                maintenance that lookup runs are shown apart), page cache warm and with the
                files evicted from it first (posix_fadvise DONTNEED on our own files)
    memory      resident memory added by that open + first lookup, per entry
    files       SQLite file and saved index file, bytes per entry
    inserts     ``cache.store`` one by one; batched writes (``SemanticCache.store_many`` when
                it exists, otherwise ``Store.put`` in a loop and ``Store.put_many``); the expiry
                sweep that periodic maintenance runs

Data (synthetic-from-real, not a real workload). Up to ``--real`` distinct sentences of the
sentence-pair sets in ../shared/data/ (STS-B, SICK, MRPC; read, never copied into the repo) are
embedded once with semcache's ONNX all-MiniLM-L6-v2 (the torch model if ONNX is unavailable) and
cached in /tmp. The last ``HELD_OUT`` of them are never stored. Stored entries: the remaining real
vectors first, then synthetic ones, each ``normalize(w * a + (1 - w) * b + e)`` with a, b two
random stored real vectors, w uniform in [0.5, 0.95] and e Gaussian noise of 0.01 per dimension
(about 0.2 in norm). Prompts are the real sentence of ``a``, with "(variant i)" for synthetic
rows; answers and raw completions are Ticket-shaped JSON like the demo's (about 1 KB). Queries:
near-duplicates are stored vectors plus Gaussian noise of 0.015 per dimension (cosine about 0.96
to their source), which should hit; "other requests" are the held-out real sentences, and those
whose exact best cosine is below the threshold are the misses timed.

    python benchmarks/scale.py                            # sizes 1000,100000: a few minutes
    python benchmarks/scale.py --sizes 1000,100000,1000000   # 7-10 minutes on 2 cores, 5 GB RAM
    python benchmarks/scale.py --sizes 1000000 --kinds float32 --hnsw-m 48 --no-write
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from latency import MODEL, Ticket, completion, log, messages, ms, plan_for, triple
from machine import describe

from semcache.embedding.resolve import BUNDLED_THRESHOLD

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CACHE_DIR = Path(tempfile.gettempdir()) / "semcache-scale"  # embeddings, kept between runs
KINDS = ("float32", "fp16", "sq8")
THRESHOLD = BUNDLED_THRESHOLD  # the vectors are the bundled model's
HELD_OUT = 1000
MIX_NOISE = 0.01
QUERY_NOISE = 0.015
FILL_BATCH = 10_000
PACKAGES = ("faiss-cpu", "numpy", "onnxruntime")
CATEGORIES = ("shipping", "billing", "account", "returns", "technical")


class LookupEmbedder:
    """The ``Embedder`` protocol over a table of precomputed vectors: embedding costs nothing."""

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dimension = 384

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.default = np.zeros(self.dimension, dtype=np.float32)
        self.default[0] = 1.0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table.get(t, self.default) for t in texts]).astype(np.float32)

    def fits(self, text: str) -> bool:
        return True


def open_cache(path: Path, embedder: Any, vectors: str) -> Any:
    """A SemanticCache whose index stores ``vectors`` (``index_vectors=``). Where
    ``SemanticCache`` does not take that option, the index the engine would create is made here."""
    from semcache import SemanticCache
    from semcache.index import VectorIndex

    options = {"embedder": embedder, "verifier": None, "threshold": THRESHOLD}
    if "index_vectors" in inspect.signature(SemanticCache).parameters:
        return SemanticCache(path, index_vectors=vectors, **options)
    cache = SemanticCache(path, **options)
    cache.db.check_settings({"embedder_dimension": str(embedder.dimension)})
    owner = cache.db.settings().get("database_id", "")
    cache.pipeline.scopes.index = VectorIndex(
        embedder.dimension, cache.pipeline.scopes.folder(), owner, vectors=vectors
    )
    return cache


def ask(cache: Any, text: str) -> Any:
    return cache.lookup(messages(text), Ticket, model=MODEL)


# -- data -----------------------------------------------------------------------------------------


def real_sentences(limit: int) -> list[str]:
    """Distinct sentences of the shared pair sets, in a fixed shuffled order."""
    texts: dict[str, None] = {}
    for path in sorted(DATA.glob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            if "a" in row:  # a sentence pair (banking77.jsonl holds single labeled queries)
                texts.update({row["a"].strip(): None, row["b"].strip(): None})
    ordered = sorted(texts)
    random.Random(0).shuffle(ordered)
    return ordered[:limit]


def real_vectors(texts: list[str]) -> tuple[np.ndarray, str]:
    """Embeddings of ``texts`` (unit length), computed once and cached in /tmp."""
    from semcache.embedding import resolve_embedder

    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    for choice in ("onnx", "torch"):
        label = "ONNX int8" if choice else "torch"
        path = CACHE_DIR / f"embeddings-{label.replace(' ', '-')}-{digest}.npy"
        if path.exists():
            return np.load(path), label
        try:
            model = resolve_embedder(choice)
            log(f"embedding {len(texts)} real sentences with {label} (cached in {path})")
            start = time.perf_counter()
            vectors = np.asarray(model.embed(texts), dtype=np.float32)
        except Exception as exc:  # ONNX Runtime missing or export failing: use torch
            log(f"{label} embedder unavailable ({exc}); trying the next")
            continue
        log(f"embedded at {len(texts) / (time.perf_counter() - start):.0f} sentences/s")
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
        return vectors, label
    raise RuntimeError("no embedder could embed the real sentences")


def normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthesize(real: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` stored vectors: the real ones first, then mixes of two real ones plus noise; and
    for each row the real vector whose sentence is its prompt."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    source = np.arange(n) % len(real)
    head = min(n, len(real))
    out[:head] = real[:head]
    for start in range(head, n, 100_000):
        stop = min(start + 100_000, n)
        a = rng.integers(0, len(real), stop - start)
        b = rng.integers(0, len(real), stop - start)
        w = rng.uniform(0.5, 0.95, (stop - start, 1)).astype(np.float32)
        noise = rng.normal(0, MIX_NOISE, (stop - start, real.shape[1])).astype(np.float32)
        out[start:stop] = normalized(w * real[a] + (1 - w) * real[b] + noise)
        source[start:stop] = a
    return out, source


def near_duplicates(stored: np.ndarray, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(stored), count)
    noise = rng.normal(0, QUERY_NOISE, (count, stored.shape[1])).astype(np.float32)
    return normalized(stored[rows] + noise)


def exact_best(stored: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: the best cosine of each query over ``stored`` and its row."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    rows = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(stored), 65_536):
        sims = stored[start : start + 65_536] @ queries.T
        top = sims.argmax(axis=0)
        value = sims[top, np.arange(len(queries))]
        better = value > best
        best[better], rows[better] = value[better], top[better] + start
    return best, rows


# -- building the file ----------------------------------------------------------------------------


def answer_for(i: int) -> dict[str, Any]:
    return {
        "category": CATEGORIES[i % len(CATEGORIES)],
        "priority": "high" if i % 7 == 0 else "normal",
        "order_id": f"A-{10_000 + i % 90_000}" if i % 3 == 0 else None,
        "product": None,
        "wants_refund": i % 5 == 0,
    }


def fill(path: Path, stored: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, float]:
    """Write the entries with ``Store.put_many``, ``FILL_BATCH`` per transaction; their ids and
    the rate in entries/s."""
    from semcache.storage.base import NewEntry

    cache = open_cache(path, LookupEmbedder({}), "float32")
    keyed = plan_for(cache, "x").keyed
    ids: list[int] = []
    start = time.perf_counter()
    for lo in range(0, len(stored), FILL_BATCH):
        batch = []
        for i in range(lo, min(lo + FILL_BATCH, len(stored))):
            answer = answer_for(i)
            batch.append(
                NewEntry(
                    exact_key=hashlib.sha256(f"scale {i}".encode()).hexdigest(),
                    scope=keyed.scope,
                    namespace=keyed.namespace,
                    model=MODEL,
                    schema_name="Ticket",
                    prompt=prompts[i],
                    request_json=json.dumps({"model": MODEL, "messages": messages(prompts[i])}),
                    response_json=json.dumps(answer),
                    raw_json=json.dumps(completion(answer, i)),
                    usage_json=json.dumps({"total_tokens": 150}),
                    total_tokens=150,
                    embedding=stored[i],
                )
            )
        ids += [entry_id for entry_id, _ in cache.db.put_many(batch)]
        if lo and lo % 200_000 == 0:
            log(f"  {lo:,} entries written")
    rate = len(stored) / (time.perf_counter() - start)
    cache.close()
    return np.asarray(ids, dtype=np.int64), rate


def insert_rates(cache: Any) -> list[tuple[str, float]]:
    """Entries/s, in a second scope of the same file (the measured scope keeps N entries)."""
    from semcache.storage.base import NewEntry

    rates = []
    system = "Insert benchmark: another scope."

    def request(i: int, label: str) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": system},
            {"role": "user", "content": f"Where is my parcel {i}? ({label})"},
        ]

    count = 1000
    start = time.perf_counter()
    for i in range(count):
        answer = answer_for(i)
        cache.store(
            request(i, "store"),
            Ticket,
            Ticket(**answer),
            completion=completion(answer, i),
            model=MODEL,
        )
    rates.append(
        (
            "`cache.store`, one by one (key, JSON check, one transaction each)",
            count / (time.perf_counter() - start),
        )
    )
    if hasattr(cache, "store_many"):
        items = [
            (request(i, "many"), Ticket(**answer_for(i)), completion(answer_for(i), i))
            for i in range(5000)
        ]
        try:
            start = time.perf_counter()
            for lo in range(0, len(items), 1000):
                cache.store_many(items[lo : lo + 1000], Ticket, model=MODEL)
            rate = len(items) / (time.perf_counter() - start)
            label = "`cache.store_many`, 1,000 items per call (default batch_size=256)"
            return [*rates, (label, rate)]
        except Exception as exc:  # its signature is not settled yet: measure the store instead
            log(f"cache.store_many failed ({exc!r}); measuring Store.put and Store.put_many")
    vector = np.zeros(384, dtype=np.float32)
    vector[1] = 1.0

    def entry(i: int, label: str) -> Any:
        answer = answer_for(i)
        text = f"Where is my parcel {i}? ({label})"
        return NewEntry(
            exact_key=hashlib.sha256(f"insert {label} {i}".encode()).hexdigest(),
            scope="insert-benchmark",
            namespace="default",
            model=MODEL,
            schema_name="Ticket",
            prompt=text,
            request_json=json.dumps({"model": MODEL, "messages": request(i, label)}),
            response_json=json.dumps(answer),
            raw_json=json.dumps(completion(answer, i)),
            usage_json=json.dumps({"total_tokens": 150}),
            total_tokens=150,
            embedding=vector,
        )

    entries = [entry(i, "put") for i in range(count)]
    start = time.perf_counter()
    for e in entries:
        cache.db.put(e)
    label = "`Store.put` in a loop, one transaction each (`cache.store_many` not available)"
    rates.append((label, count / (time.perf_counter() - start)))
    entries = [entry(i, "put_many") for i in range(5000)]
    start = time.perf_counter()
    for lo in range(0, len(entries), 1000):
        cache.db.put_many(entries[lo : lo + 1000])
    rate = len(entries) / (time.perf_counter() - start)
    rates.append(("`Store.put_many`, 1,000 per transaction", rate))
    return rates


# -- measuring one kind ---------------------------------------------------------------------------


def evict(paths: Sequence[Path]) -> None:
    """Drop our own files from the page cache, so the next read comes from the disk."""
    for path in paths:
        if path.exists():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


CHILD = """
import json, sys, time
sys.path.insert(0, {bench!r})
import numpy as np, faiss, semcache  # imported before timing: imports are not the open
from scale import LookupEmbedder, ask, open_cache
from latency import vm_rss
from semcache.index import VectorIndex

loads = []
original = VectorIndex.load
def timed_load(self, scope):
    start = time.perf_counter()
    loaded = original(self, scope)
    loads.append((time.perf_counter() - start, loaded))
    return loaded
VectorIndex.load = timed_load
from semcache.pipeline import Pipeline
maintenance = []
original_maintain = Pipeline._maintain
def timed_maintain(self):
    start = time.perf_counter()
    original_maintain(self)
    maintenance.append(time.perf_counter() - start)
Pipeline._maintain = timed_maintain
vectors = np.load({queries!r})
rss0 = vm_rss()
t0 = time.perf_counter()
cache = open_cache({path!r}, LookupEmbedder({{"cold": vectors[0], "again": vectors[1]}}), {kind!r})
t1 = time.perf_counter()
hit = ask(cache, "cold")
t2 = time.perf_counter()
maintained = sum(maintenance)
rss1 = vm_rss()
ask(cache, "again")
t3 = time.perf_counter()
print(json.dumps({{"open": t1 - t0, "first": t2 - t1, "second": t3 - t2, "rss": rss1 - rss0,
                  "hit": hit is not None, "load": loads[0][0] if loads else 0.0,
                  "loaded": bool(loads and loads[0][1]), "maintenance": maintained}}))
"""


def cold_open(path: Path, kind: str, queries: Path, evicted: bool) -> dict[str, Any]:
    if evicted:
        evict([path, *path.parent.glob(f"{path.name}.index/*.faiss")])
    code = CHILD.format(
        bench=str(REPO / "benchmarks"), queries=str(queries), path=str(path), kind=kind
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"cold open failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process"] = time.perf_counter() - start
    return result


def measure_kind(
    path: Path,
    kind: str,
    stored: np.ndarray,
    ids: np.ndarray,
    queries: dict[str, np.ndarray],
    truth: dict[str, tuple[np.ndarray, np.ndarray]],
    misses: np.ndarray,
    reps: int,
    with_inserts: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    near, others = queries["near"], queries["other"]
    table = {f"near {i}": v for i, v in enumerate(near)}
    table.update({f"miss {i}": others[i] for i in misses})
    shutil.rmtree(path.with_name(path.name + ".index"), ignore_errors=True)
    cache = open_cache(path, LookupEmbedder(table), kind)
    scope = plan_for(cache, "x").keyed.scope
    start = time.perf_counter()
    cache.pipeline.catch_up(scope)  # what the first lookup does when there is no saved file:
    cache.pipeline.scopes.wait(scope)  # start the build in the background; here, wait for it
    index = cache.pipeline.catch_up(scope)
    out["rebuild"] = time.perf_counter() - start
    # Not timed: the first lookup of a process also runs the first periodic maintenance (which
    # saves an index that grew by 50,000 vectors or more).
    ask(cache, "near 0")
    log(
        f"  {kind}: index rebuilt from SQLite in {out['rebuild']:.1f} s; {reps} hits, {reps} misses"
    )
    hit_times, miss_times, served, exact_served, wrong_misses = [], [], 0, 0, 0
    best_near, _ = truth["near"]
    for i in range(reps):
        q = 1 + i % (len(near) - 1)
        start = time.perf_counter()
        hit = ask(cache, f"near {q}")
        hit_times.append(time.perf_counter() - start)
        if hit is not None:
            served += 1
            row = int(np.searchsorted(ids, hit.entry_id))
            exact_served += float(stored[row] @ near[q]) >= best_near[q] - 1e-5
        m = int(misses[i % len(misses)])
        start = time.perf_counter()
        wrong_misses += ask(cache, f"miss {m}") is not None
        miss_times.append(time.perf_counter() - start)
    out.update(hits=hit_times, misses=miss_times, served=served, exact_served=exact_served)
    out["wrong_misses"] = wrong_misses
    for name, q in queries.items():
        best, _ = truth[name]
        at1 = at4 = 0
        for j, vector in enumerate(q):
            found = [i for i, _ in index.search(scope, vector, 4)]
            rows = np.searchsorted(ids, found)
            good = [float(stored[r] @ vector) >= best[j] - 1e-5 for r in rows]
            at1 += bool(good[:1] and good[0])
            at4 += any(good)
        out[f"recall1 {name}"], out[f"recall4 {name}"] = at1 / len(q), at4 / len(q)
    if with_inserts:
        log(f"  {kind}: insert throughput, expiry sweep")
        out["inserts"] = insert_rates(cache)
        start = time.perf_counter()
        cache.db.evict_expired(time.time())
        out["sweep"] = time.perf_counter() - start
    start = time.perf_counter()
    index.save(min_unsaved=0)  # every scope big enough, changed or not: the whole write
    out["save"] = time.perf_counter() - start
    cache.close()
    saved = list(path.with_name(path.name + ".index").glob("*.faiss"))
    out["index_bytes"] = sum(p.stat().st_size for p in saved)
    qpath = path.with_name("cold-queries.npy")
    np.save(qpath, near[-2:])
    log(f"  {kind}: cold opens in new processes")
    runs = [cold_open(path, kind, qpath, evicted=False) for _ in range(3)]
    out["cold"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["cold_loaded"] = all(r["loaded"] for r in runs)
    out["cold_hit"] = all(r["hit"] for r in runs)
    out["evicted"] = cold_open(path, kind, qpath, evicted=True)
    return out


# -- report ---------------------------------------------------------------------------------------


def section(
    n: int,
    results: dict[str, dict[str, Any]],
    db_bytes: int,
    fill_rate: float,
    counts: dict[str, int],
    reps: int,
) -> list[str]:
    kinds = list(results)

    def row(label: str, cell: Any) -> str:
        return f"| {label} | " + " | ".join(cell(results[k]) for k in kinds) + " |"

    def recall(key: str) -> Any:
        return lambda r: f"{r[key]:.4f}"

    def file_size(r: dict[str, Any]) -> str:
        return f"{r['index_bytes'] / n:,.0f}" if r["index_bytes"] else "no file (< 5,000)"

    def cold(key: str, source: str = "cold") -> Any:
        return lambda r: ms(r[source][key]) if key != "load" or r[source]["loaded"] else "–"

    def to_first_hit(source: str) -> Any:
        return lambda r: f"{r[source]['open'] + r[source]['first']:.2f}"

    def evicted(r: dict[str, Any]) -> str:
        e = r["evicted"]
        load = f"load {e['load']:.2f}, " if e["loaded"] else ""
        return f"{to_first_hit('evicted')(r)} ({load}maintenance {e['maintenance']:.2f})"

    first = next(iter(results.values()))
    inserts = first.get("inserts", [])
    return [
        f"## {n:,} entries in one scope",
        "",
        f"Lookups: {reps} semantic hits (near-duplicates) and {reps} misses (held-out sentences "
        f"whose exact best cosine is below {THRESHOLD}: {counts['misses']} of {counts['other']}), "
        "interleaved; the whole `cache.lookup` is timed (embedding is a table lookup). Recall: "
        f"{counts['near']} near-duplicate queries, {counts['other']} held-out sentences and "
        f"{counts['near']} stored vectors against numpy brute force (ties within 1e-5 count as "
        "found). Cold open: median of 3 new "
        "processes, imports excluded; resident memory from before the open to after the first "
        "lookup.",
        "",
        "| | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
        row("semantic hit, ms p50 / p95 / p99", lambda r: triple(r["hits"])),
        row("miss, ms p50 / p95 / p99", lambda r: triple(r["misses"])),
        row(
            "hits served / of those, the exact nearest entry",
            lambda r: f"{r['served']} / {r['exact_served']} of {reps}",
        ),
        row("misses that hit (should be 0)", lambda r: str(r["wrong_misses"])),
        row("recall@1, near-duplicates", recall("recall1 near")),
        row("recall@4 (the candidates re-scored), near-duplicates", recall("recall4 near")),
        row("recall@1, held-out sentences", recall("recall1 other")),
        row("recall@4, held-out sentences", recall("recall4 other")),
        row(
            "stored vectors that find themselves first (unreachable ones fail)",
            recall("recall1 self"),
        ),
        row(
            "no saved index: all vectors read from SQLite and the index built (`_catch_up`), s",
            lambda r: f"{r['rebuild']:.2f}",
        ),
        row("saving the index file (`VectorIndex.save`), s", lambda r: f"{r['save']:.2f}"),
        row("index file, bytes per entry", file_size),
        row("cold open: `SemanticCache(path)`, ms", cold("open")),
        row("cold open: first semantic lookup, ms", cold("first")),
        row("… of which `VectorIndex.load` (– : no file), ms", cold("load")),
        row(
            "… of which periodic maintenance (expiry sweep, due after 1 s), ms", cold("maintenance")
        ),
        row("cold open: second lookup, ms", cold("second")),
        row("**cold open to first hit, s**", lambda r: f"**{to_first_hit('cold')(r)}**"),
        row("the same, files evicted from the page cache first (1 run), s", evicted),
        row(
            "new process, wall time (interpreter, imports, open, 2 lookups), s",
            lambda r: f"{r['cold']['process']:.2f}",
        ),
        row(
            "resident memory added by open + first lookup, per entry",
            lambda r: f"{r['cold']['rss'] / n:,.0f} B",
        ),
        "",
        "| writes and file | value |",
        "|---|---:|",
        f"| bulk fill: `Store.put_many`, {FILL_BATCH:,} per transaction | {fill_rate:,.0f} "
        "entries/s |",
        *[f"| {label} | {rate:,.0f} entries/s |" for label, rate in inserts],
        f"| expiry sweep (`Store.evict_expired`; maintenance runs it inside a lookup every 30 s) "
        f"| {ms(first['sweep'])} ms |",
        f"| SQLite file per entry | {db_bytes / n:,.0f} B ({db_bytes / 1e6:,.0f} MB) |",
        "",
    ]


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="entries, comma-separated")
    parser.add_argument("--kinds", default=",".join(KINDS), help="vectors= choices to measure")
    parser.add_argument("--real", type=int, default=12_000, help="real sentences to embed")
    parser.add_argument("--reps", type=int, default=500, help="timed hits and misses per kind")
    parser.add_argument("--queries", type=int, default=1000, help="near-duplicates for recall")
    parser.add_argument("--hnsw-m", type=int, help="override semcache.index.HNSW_M")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scale.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} (the shared sentence-pair sets) is not here", file=sys.stderr)
        return
    from semcache.index import vector_index as index

    if args.hnsw_m:  # the graph's links per node: an experiment, not a cache setting
        index.HNSW_M = args.hnsw_m
    sizes = [int(s) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    started = time.perf_counter()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    texts = real_sentences(args.real)
    real, embedder_label = real_vectors(texts)
    bases, others = real[:-HELD_OUT], real[-HELD_OUT:]
    command = " ".join(["python benchmarks/scale.py", *sys.argv[1:]])
    lines = [
        "# Scale: one scope of up to 1M entries, per kind of stored vectors",
        "",
        f"`{command}` ({time.strftime('%Y-%m-%d')})",
        "",
        *describe(PACKAGES),
        f"- Load average (1/5/15 min) at start: {load}. The machine was shared with other "
        "engineers' test runs: absolute times are noisy.",
        "",
        "**The data is synthetic-from-real, not a real workload.** "
        f"{len(texts):,} distinct sentences of the public STS-B, SICK and MRPC pair sets were "
        f"embedded with all-MiniLM-L6-v2 ({embedder_label}); {HELD_OUT:,} of them are never "
        f"stored. A cache of N entries holds the other {len(bases):,} real vectors first, then "
        "synthetic ones: `normalize(w*a + (1-w)*b + e)`, a and b random real vectors, w uniform "
        f"in [0.5, 0.95], e Gaussian noise of {MIX_NOISE} per dimension. Near-duplicate queries "
        f"are stored vectors plus Gaussian noise of {QUERY_NOISE} per dimension (cosine about "
        "0.96 to their source); held-out sentences are the other queries, and those whose exact "
        f"best cosine is below the threshold ({THRESHOLD}) are the misses. Verification is off "
        "(`verifier=None`). All entries share one scope (one system prompt, schema and model). "
        f"Files live under {args.workdir} and are deleted at the end. The index's vectors are "
        "chosen with `SemanticCache(index_vectors=...)` (where that option is missing, by "
        "handing the engine its `VectorIndex`: see `open_cache`); the "
        "threshold is the cache's default.",
        "",
        "Kinds: `float32` (IndexFlatIP, then IndexHNSWFlat), `fp16` (IndexScalarQuantizer fp16, "
        "then IndexHNSWSQ fp16), `sq8` (fp16 while flat, then IndexHNSWSQ 8-bit trained on the "
        f"scope's vectors at migration); HNSW from {index.HNSW_AT:,} vectors, M={index.HNSW_M}, "
        f"efConstruction={index.HNSW_EF_CONSTRUCTION}, efSearch={index.HNSW_EF_SEARCH} "
        f"({index.HNSW_EF_SEARCH_LARGE} from {index.HNSW_LARGE:,} vectors); the "
        "cache re-scores every candidate with the float32 vector in SQLite.",
        "",
    ]
    print("\n".join(lines))
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="semcache-scale-", dir=args.workdir) as tmp:
            path = Path(tmp) / "cache.db"
            log(f"size {n:,}: synthesizing vectors and writing the file")
            stored, source = synthesize(bases, n, seed=n)
            prompts = [
                texts[s] if i < len(bases) else f"{texts[s]} (variant {i})"
                for i, s in enumerate(source)
            ]
            ids, fill_rate = fill(path, stored, prompts)
            del prompts
            db_bytes = sum(p.stat().st_size for p in Path(tmp).glob("cache.db*") if p.is_file())
            log(f"size {n:,}: {fill_rate:,.0f} entries/s; exact search for the recall truth")
            rows = np.random.default_rng(n + 2).integers(0, n, args.queries)
            queries = {
                "near": near_duplicates(stored, args.queries, seed=n + 1),
                "other": others,
                "self": stored[rows],
            }
            truth = {name: exact_best(stored, q) for name, q in queries.items()}
            misses = np.flatnonzero(truth["other"][0] < THRESHOLD)
            assert len(misses), "every held-out sentence has a stored near-duplicate"
            results: dict[str, dict[str, Any]] = {}
            for i, kind in enumerate(kinds):
                results[kind] = measure_kind(
                    path, kind, stored, ids, queries, truth, misses, args.reps, i == 0
                )
            counts = {"near": len(queries["near"]), "other": len(others), "misses": len(misses)}
            part = section(n, results, db_bytes, fill_rate, counts, args.reps)
            print("\n".join(part), flush=True)
            lines += part
            del stored, ids
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        f"Run took {time.perf_counter() - started:.0f} s; load average at the end: {load}.",
        "",
    ]
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines))
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
