"""Fleet: several node processes sharing one cache on PostgreSQL, each with its own FAISS replica.

One private schema on the server is filled with N entries in one scope (vectors from a
deterministic 384-dimension stand-in for MiniLM, so that filling 100k entries takes seconds and
"embedding excluded" is exact). Then ``--nodes`` processes start at once, and each measures:

    cold start   until its first semantic hit: reading the scope's vectors and building its index
                 (in the background: lookups meanwhile are answered by the exact tier only)
    exact        an exact hit through a wrapped instructor client (HTTP faked in-process)
    semantic     a semantic hit through ``cache.lookup`` (embedding cost ~20 us, i.e. excluded),
                 and interleaved with it one made as if the scope had just been notified of a
                 change (it reads the change feed, as every lookup did before notifications)
    lag          node 0 stores an answer; the time until each other node's lookup finds it
    throughput   lookups per second, all nodes at once (half exact, half semantic)
    memory       resident memory of the node after its index is built

Every hit is checked: a lookup answered with another item's answer counts as wrong. The MiniLM
embedding time per query is measured on its own (``--model``) so that "embedding included" is
the semantic figure plus that. GPTCache is not compared here (not installed on this machine).

    python benchmarks/fleet.py --entries 10000 --nodes 4
    python benchmarks/fleet.py --entries 100000 --nodes 4 --out benchmarks/results/fleet.md

``--cold-start`` measures a new node's start from a prebuilt snapshot instead (``cold_start``):

    python benchmarks/fleet.py --cold-start --entries 100000 --nodes 2
    python benchmarks/fleet.py --cold-start --entries 1000000 --nodes 1 --out benchmarks/results/fleet.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SERVER = "postgresql://postgres@127.0.0.1:5432/test"


class Answer(BaseModel):
    text: str


class Embedder384:
    """Texts equal once lower-cased and stripped of end punctuation embed at cosine ~0.99, others
    near 0 (the stand-in of tests/pgserver.py, at MiniLM's width)."""

    name = "bench-hash-384"
    dimension = 384

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.vstack([self._one(t) for t in texts]).astype(np.float32)

    def fits(self, text: str) -> bool:
        return True

    def _one(self, text: str) -> np.ndarray:
        core = text.lower().strip().rstrip("?!. ")
        vector = _gaussian(core) + 0.08 * _gaussian(text)
        return vector / np.linalg.norm(vector)


def _gaussian(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(384)


def question(item: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Fleet item {item}?"}]


def paraphrase(item: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"fleet item {item}"}]


def open_cache(dsn: str) -> Any:
    from semcache import SemanticCache

    return SemanticCache(dsn, embedder=Embedder384(), verifier=None, threshold=0.9)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000.0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def wrapped_client(cache: Any) -> Any:
    import httpx
    import instructor
    from openai import OpenAI

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        text = body["messages"][-1]["content"]
        call = {"id": "c", "type": "function",
                "function": {"name": body["tools"][0]["function"]["name"],
                             "arguments": json.dumps({"text": text})}}  # fmt: skip
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
        })  # fmt: skip

    http = httpx.Client(transport=httpx.MockTransport(handler))
    return cache.wrap(
        instructor.from_openai(OpenAI(api_key="x", base_url="http://f/v1", http_client=http))
    )


def node(dsn: str, me: int, nodes: int, entries: int, start: Any, lag_queue: Any, out: Any) -> None:
    result: dict[str, Any] = {"node": me, "wrong": 0}
    rng = np.random.default_rng(me)
    with open_cache(dsn) as cache:
        start.wait()
        began = time.perf_counter()
        cache.lookup(paraphrase(0), Answer, model="m")  # a miss while the index is built
        cache.pipeline.scopes.wait()
        hit = cache.lookup(paraphrase(0), Answer, model="m")
        result["cold_start_s"] = time.perf_counter() - began
        result["wrong"] += hit is None or hit.value.text != "answer 0"
        scope = hit.scope if hit is not None else ""  # every item's: one scope
        result["rss_mb"] = rss_mb()
        start.wait()  # every node has built its index: the timings below are of a warm fleet
        client = wrapped_client(cache)
        # Each semantic lookup is paired with one made as if its scope had just been notified
        # (it reads the change feed, as every lookup did before notifications): the two are
        # interleaved, in turn first, so load from other work on the machine weighs on both.
        listener = getattr(cache.pipeline.store, "listener", None)
        exact, semantic, fed = [], [], []
        for turn, item in enumerate(rng.integers(0, entries, 300).tolist()):
            t = time.perf_counter()
            value = client.create(model="m", response_model=Answer, messages=question(item))
            exact.append(time.perf_counter() - t)
            result["wrong"] += value.text != f"answer {item}"
            kinds = ["plain"] if listener is None else ["fed", "plain"][:: 1 if turn % 2 else -1]
            for kind in kinds:
                if kind == "fed":
                    listener.touch([scope])
                t = time.perf_counter()
                hit = cache.lookup(paraphrase(item), Answer, model="m")
                (fed if kind == "fed" else semantic).append(time.perf_counter() - t)
                result["wrong"] += hit is None or hit.value.text != f"answer {item}"
        result["exact_ms"] = (percentile(exact, 0.5), percentile(exact, 0.99))
        result["semantic_ms"] = (percentile(semantic, 0.5), percentile(semantic, 0.99))
        result["fed_ms"] = (percentile(fed, 0.5), percentile(fed, 0.99)) if fed else None
        start.wait()
        lags: list[float] = []
        if me == 0 and nodes > 1:  # the writer: one new answer at a time, announced to readers
            for k in range(100):
                item = entries + k
                cache.store(question(item), Answer, Answer(text=f"answer {item}"), model="m")
                for _ in range(nodes - 1):
                    lag_queue.put((item, time.time()))
                time.sleep(0.02)
        elif me > 0:
            for _ in range(100):
                item, stored_at = lag_queue.get(timeout=120)
                while True:
                    hit = cache.lookup(paraphrase(item), Answer, model="m")
                    if hit is not None:
                        lags.append(time.time() - stored_at)
                        result["wrong"] += hit.value.text != f"answer {item}"
                        break
        result["lag_s"] = lags
        start.wait()
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 5.0:
            item = int(rng.integers(0, entries))
            hit = cache.lookup((question if done % 2 else paraphrase)(item), Answer, model="m")
            result["wrong"] += hit is None or hit.value.text != f"answer {item}"
            done += 1
        result["lookups_per_s"] = done / (time.perf_counter() - t0)
    out.put(result)


def model_embed_ms() -> float:
    from semcache.embedding.resolve import resolve_embedder

    embedder = resolve_embedder(None)
    embedder.embed(["warm up"])
    times = []
    for k in range(50):
        t = time.perf_counter()
        embedder.embed([f"fleet item {k}, where is my parcel?"])
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default=SERVER)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--model", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cold-start", action="store_true", help="snapshot cold start only")
    parser.add_argument("--after", type=int, default=1000, help="(--cold-start) entries added "
                        "and as many deleted after the snapshot")  # fmt: skip
    args = parser.parse_args()
    if args.cold_start:
        from fleet_cold import cold_start

        cold_start(args.server, args.entries, args.nodes, args.after, args.out)
        return
    import psycopg

    load_before = os.getloadavg()[0]
    schema = f"semcache_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.server, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{args.server}?options=-csearch_path%3D{schema}"
    try:
        t = time.perf_counter()
        with open_cache(dsn) as cache:
            items = ((question(i), Answer(text=f"answer {i}")) for i in range(args.entries))
            cache.store_many(items, Answer, model="m", batch_size=1000)
        fill_s = time.perf_counter() - t
        context = multiprocessing.get_context("spawn")
        start, lag_queue, out = context.Barrier(args.nodes), context.Queue(), context.Queue()
        procs = [
            context.Process(
                target=node, args=(dsn, n, args.nodes, args.entries, start, lag_queue, out)
            )
            for n in range(args.nodes)
        ]
        for proc in procs:
            proc.start()
        results = sorted((out.get(timeout=3600) for _ in procs), key=lambda r: r["node"])
        for proc in procs:
            proc.join()
    finally:
        with psycopg.connect(args.server, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
    embed_ms = model_embed_ms() if args.model else float("nan")
    lags = [lag for r in results for lag in r["lag_s"]]
    lines = [
        f"`python benchmarks/fleet.py --entries {args.entries} --nodes {args.nodes}`, "
        f"{time.strftime('%Y-%m-%d')}, PostgreSQL on loopback, {os.cpu_count()} cores shared "
        f"with other work (load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end).",
        "",
        f"| fleet, {args.nodes} nodes, {args.entries:,} entries in one scope | value |",
        "|---|---:|",
        f"| fill with store_many (one process) | {args.entries / fill_s:,.0f} entries/s |",
        f"| cold start (first semantic lookup: read vectors + build index), median of nodes | "
        f"{statistics.median(r['cold_start_s'] for r in results):.2f} s |",
        f"| exact hit through the wrapped client, p50 / p99 | "
        f"{statistics.median(r['exact_ms'][0] for r in results):.2f} / "
        f"{max(r['exact_ms'][1] for r in results):.2f} ms |",
        f"| semantic hit, embedding excluded, p50 / p99 | "
        f"{statistics.median(r['semantic_ms'][0] for r in results):.2f} / "
        f"{max(r['semantic_ms'][1] for r in results):.2f} ms |",
        "| semantic hit reading the change feed (as if notified; every lookup before "
        "notifications), same run, interleaved, p50 / p99 | "
        + (
            f"{statistics.median(r['fed_ms'][0] for r in results):.2f} / "
            f"{max(r['fed_ms'][1] for r in results):.2f} ms |"
            if all(r["fed_ms"] for r in results)
            else "- |"
        ),
        f"| semantic hit, embedding included (+ MiniLM per query {embed_ms:.1f} ms), p50 | "
        f"{statistics.median(r['semantic_ms'][0] for r in results) + embed_ms:.2f} ms |",
        "| store-to-hit lag on another node, p50 / p99 | "
        + (f"{percentile(lags, 0.5):.1f} / {percentile(lags, 0.99):.1f} ms |" if lags else "- |"),
        f"| lookups per second, all nodes at once | "
        f"{sum(r['lookups_per_s'] for r in results):,.0f} |",
        f"| resident memory per node after its index is built, median | "
        f"{statistics.median(r['rss_mb'] for r in results):.0f} MB |",
        f"| wrong answers served | {sum(r['wrong'] for r in results)} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        header = "# Fleet results\n\n" if not args.out.exists() else ""
        with args.out.open("a", encoding="utf-8") as f:
            f.write(header + text + "\n")


if __name__ == "__main__":
    main()
