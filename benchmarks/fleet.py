"""Fleet: several node processes sharing one cache on PostgreSQL, each with its own FAISS replica.

One private schema on the server is filled with N entries in one scope. Their vectors come from a
table, so that filling 100k entries takes seconds and "embedding excluded" is exact: by default
(``--vectors real``) synthetic-from-real vectors shaped like MiniLM's (``fleet_vectors.py``: the
items probed are the unambiguous ones); ``--vectors gaussian`` uses independent Gaussian vectors,
the worst case for an HNSW graph's search. Then ``--nodes`` processes start at once, and each
measures:

    cold start   until its first semantic hit: reading the scope's vectors and building its index
                 (in the background: lookups meanwhile are answered by the exact tier only)
    exact        an exact hit through a wrapped instructor client (HTTP faked in-process)
    semantic     a semantic hit through ``cache.lookup`` (embedding cost ~20 us, i.e. excluded),
                 and interleaved with it one made as if the scope had just been notified of a
                 change (it reads the change feed, as every lookup did before notifications)
    lag          node 0 stores an answer; the time until each other node's lookup finds it (a
                 waiting node looks every ``--lag-poll-ms``, 1 ms; 0 spins)
    throughput   lookups per second, all nodes at once (half exact, half semantic)
    memory       resident memory of the node after its index is built

Every hit is checked: a lookup answered with another item's answer counts as wrong. The MiniLM
embedding time per query is measured on its own (``--model``) so that "embedding included" is
the semantic figure plus that. Semantic lookups get their vector from the table
(``RealLike``, or ``Precomputed`` for the Gaussian stand-ins).

GPTCache runs beside it in the same run, on the same server, entries and probes, its lookups
interleaved with semcache's in each node (``fleet_gptcache.py``; ``pip install -e '.[bench]'``;
without it the side is skipped with a note, or ``--no-gptcache``).

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
import shutil
import statistics
import tempfile
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


class Precomputed(Embedder384):
    """The stand-in with every vector kept: ``warm`` computes the probes' vectors before the
    timed lookups, so a timed lookup (semcache's or GPTCache's) gets its vector from a dict."""

    def __init__(self) -> None:
        self._memo: dict[str, np.ndarray] = {}

    def warm(self, texts: list[str]) -> None:
        self.embed(texts)

    def embed(self, texts: list[str]) -> np.ndarray:
        for text in texts:
            if text not in self._memo:
                self._memo[text] = self._one(text).astype(np.float32)
        return np.vstack([self._memo[t] for t in texts])


def _gaussian(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(384)


def question(item: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Fleet item {item}?"}]


def paraphrase(item: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"fleet item {item}"}]


def text_of(messages: list[dict[str, str]]) -> str:
    return messages[-1]["content"]  # what semcache embeds: the last user message


def open_cache(dsn: str, embedder: Embedder384 | None = None) -> Any:
    from semcache import SemanticCache

    return SemanticCache(dsn, embedder=embedder or Embedder384(), verifier=None, threshold=0.9)


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


def node(
    dsn: str, me: int, nodes: int, entries: int, start: Any, lag_queue: Any, out: Any,
    gpt: tuple[str, str, int] | None = None, vectors: tuple[str, list[int]] | None = None,
    poll_s: float = 0.001,
) -> None:  # fmt: skip
    """One node process. ``vectors``: the folder of ``fleet_vectors.RealLike`` and the items it
    may probe; without it, the Gaussian stand-in and every item."""
    result: dict[str, Any] = {"node": me, "wrong": 0}
    rng = np.random.default_rng(me)
    embedder: Any = Precomputed()
    probed: Any = entries
    if vectors is not None:
        from fleet_vectors import RealLike

        embedder, probed = RealLike(vectors[0]), np.asarray(vectors[1])
    with open_cache(dsn, embedder) as cache:
        start.wait()
        began = time.perf_counter()
        first = int(rng.choice(probed))
        cache.lookup(paraphrase(first), Answer, model="m")  # a miss while the index is built
        cache.pipeline.scopes.wait()
        hit = cache.lookup(paraphrase(first), Answer, model="m")
        result["cold_start_s"] = time.perf_counter() - began
        result["wrong"] += hit is None or hit.value.text != f"answer {first}"
        scope = hit.scope if hit is not None else ""  # every item's: one scope
        result["rss_mb"] = rss_mb()
        side = None
        if gpt is not None:  # after the memory figure, which is semcache's alone
            from fleet_gptcache import open_node

            side, result["gpt_open_s"] = open_node(
                gpt[0], Path(gpt[1]), me, gpt[2], lambda text: embedder.embed([text])[0]
            )
        start.wait()  # every node has built its index: the timings below are of a warm fleet
        client = wrapped_client(cache)
        # Each semantic lookup is paired with one made as if its scope had just been notified
        # (it reads the change feed, as every lookup did before notifications) and with
        # GPTCache's lookups of the same probe: all interleaved, each first in turn, so load
        # from other work on the machine weighs on all of them alike.
        listener = getattr(cache.pipeline.store, "listener", None)
        kinds = (
            ["plain"] + ["fed"] * (listener is not None) + ["default", "tuned"] * (side is not None)
        )
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        hits, wrong = dict.fromkeys(kinds, 0), dict.fromkeys(kinds, 0)
        exact: list[float] = []
        probes = [int(item) for item in rng.choice(probed, 300)]
        embedder.warm([text_of(paraphrase(item)) for item in probes])
        for turn, item in enumerate(probes):
            t = time.perf_counter()
            value = client.create(model="m", response_model=Answer, messages=question(item))
            exact.append(time.perf_counter() - t)
            result["wrong"] += value.text != f"answer {item}"
            for kind in kinds[turn % len(kinds) :] + kinds[: turn % len(kinds)]:
                if side is not None and kind in ("default", "tuned"):
                    side.prepare(kind)  # untimed: FAISS's thread count for this contender
                    t = time.perf_counter()
                    served = side.get(text_of(paraphrase(item)), kind)
                    times[kind].append(time.perf_counter() - t)
                else:
                    if kind == "fed":
                        listener.touch([scope])
                    t = time.perf_counter()
                    hit = cache.lookup(paraphrase(item), Answer, model="m")
                    times[kind].append(time.perf_counter() - t)
                    served = None if hit is None else hit.value.text
                    result["wrong"] += served != f"answer {item}"
                hits[kind] += served is not None
                wrong[kind] += served is not None and served != f"answer {item}"
        result["exact_ms"] = (percentile(exact, 0.5), percentile(exact, 0.99))
        result["semantic_ms"] = (percentile(times["plain"], 0.5), percentile(times["plain"], 0.99))
        fed = times.get("fed")
        result["fed_ms"] = (percentile(fed, 0.5), percentile(fed, 0.99)) if fed else None
        result["side_by_side"] = {
            kind: {"ms": (percentile(times[kind], 0.5), percentile(times[kind], 0.99)),
                   "hits": hits[kind], "wrong": wrong[kind], "probes": len(probes)}
            for kind in kinds if kind != "fed"
        }  # fmt: skip
        if side is not None:
            result["gpt_phases_ms"] = side.phases_ms()
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
                    if time.time() - stored_at > LAG_GIVE_UP_S:
                        result["lag_lost"] = result.get("lag_lost", 0) + 1
                        break
                    time.sleep(poll_s)
        result["lag_s"] = lags
        start.wait()
        if side is not None and nodes > 1:  # the same for GPTCache, on new items of its own
            from fleet_gptcache import LAG_ITEMS, lag_reader, lag_writer

            if me == 0:
                new = range(entries + 100, entries + 100 + LAG_ITEMS)
                items = [(text_of(question(k)), text_of(paraphrase(k)), f"answer {k}") for k in new]
                result["gpt_own"] = lag_writer(side, items, lag_queue, nodes - 1)
            else:
                result["gpt_lag"] = lag_reader(side, LAG_ITEMS, lag_queue)
        start.wait()
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 5.0:
            item = int(rng.choice(probed))
            hit = cache.lookup((question if done % 2 else paraphrase)(item), Answer, model="m")
            result["wrong"] += hit is None or hit.value.text != f"answer {item}"
            done += 1
        result["lookups_per_s"] = done / (time.perf_counter() - t0)
        if side is not None:
            side.close()
    out.put(result)


LAG_GIVE_UP_S = 10.0  # an answer not found by then counts as lost


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
    parser.add_argument("--lag-poll-ms", type=float, default=1.0,
                        help="pause of a reader between lookups while it waits for a new answer "
                        "(0: it spins, and four spinning nodes crowd two cores)")  # fmt: skip
    parser.add_argument("--vectors", choices=("real", "gaussian"), default="real",
                        help="MiniLM-shaped vectors (fleet_vectors.py) or Gaussian stand-ins")  # fmt: skip
    parser.add_argument("--out", type=Path)
    parser.add_argument("--gptcache", action=argparse.BooleanOptionalAction, default=True,
                        help="GPTCache beside semcache, on the same server (fleet_gptcache.py)")  # fmt: skip
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
    gpt_schema = f"semcache_bench_gpt_{uuid.uuid4().hex[:8]}"  # GPTCache's tables, apart
    note = None
    if args.gptcache:
        from fleet_gptcache import missing

        note = missing()
        if note:
            print(note)
    schemas = [schema] + [gpt_schema] * (args.gptcache and note is None)
    with psycopg.connect(args.server, autocommit=True) as admin:
        for name in schemas:
            admin.execute(f"CREATE SCHEMA {name}")
    dsn = f"{args.server}?options=-csearch_path%3D{schema}"
    workdir = Path(tempfile.mkdtemp(prefix="fleet-"))
    gpt, gpt_fill_s = None, float("nan")
    vectors: tuple[str, list[int]] | None = None
    embedder: Any = Embedder384()
    real_label = ""
    try:
        if args.vectors == "real":
            from fleet_gptcache import LAG_ITEMS
            from fleet_vectors import RealLike, prepare

            extra = 100 + LAG_ITEMS  # the items stored while lag is measured, GPTCache's too
            clean, real_label = prepare(workdir, args.entries, extra, 0.9, 0.05)
            vectors, embedder = (str(workdir), clean), RealLike(workdir)
        t = time.perf_counter()
        with open_cache(dsn, embedder) as cache:
            items = ((question(i), Answer(text=f"answer {i}")) for i in range(args.entries))
            cache.store_many(items, Answer, model="m", batch_size=1000)
        fill_s = time.perf_counter() - t
        if gpt_schema in schemas:
            from fleet_gptcache import LAG_ITEMS, fill, sql_url

            texts = [text_of(question(i)) for i in range(args.entries)]
            url, filled = sql_url(args.server, gpt_schema), workdir / "filled.index"
            gpt_fill_s = fill(url, filled, texts, [f"answer {i}" for i in range(args.entries)],
                              embedder.embed(texts))  # fmt: skip
            gpt = (url, str(filled), args.entries + LAG_ITEMS + 1000)
        context = multiprocessing.get_context("spawn")
        start, lag_queue, out = context.Barrier(args.nodes), context.Queue(), context.Queue()
        poll_s = args.lag_poll_ms / 1000
        procs = [
            context.Process(
                target=node,
                args=(
                    dsn,
                    n,
                    args.nodes,
                    args.entries,
                    start,
                    lag_queue,
                    out,
                    gpt,
                    vectors,
                    poll_s,
                ),
            )
            for n in range(args.nodes)
        ]
        for proc in procs:
            proc.start()
        results = sorted((out.get(timeout=3600) for _ in procs), key=lambda r: r["node"])
        for proc in procs:
            proc.join()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        with psycopg.connect(args.server, autocommit=True) as admin:
            for name in schemas:
                admin.execute(f"DROP SCHEMA {name} CASCADE")
    embed_ms = model_embed_ms() if args.model else float("nan")
    lags = [lag for r in results for lag in r["lag_s"]]
    lines = [
        f"`python benchmarks/fleet.py --entries {args.entries} --nodes {args.nodes} "
        f"--vectors {args.vectors} --lag-poll-ms {args.lag_poll_ms:g}"
        f"{'' if args.gptcache else ' --no-gptcache'}`, "
        f"{time.strftime('%Y-%m-%d')}, PostgreSQL on loopback, {os.cpu_count()} cores shared "
        f"with other work (load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end).",
        "",
        (
            f"Vectors: synthetic-from-real (`fleet_vectors.py`, real ones by MiniLM {real_label}); "
            f"probes drawn from the {len(vectors[1]):,} unambiguous items of 5,000 sampled."
            if vectors is not None
            else "Vectors: independent Gaussian stand-ins (`Embedder384`), HNSW's worst case."
        ),
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
        f"| answers another node had not found after {LAG_GIVE_UP_S:.0f} s (lost) | "
        f"{sum(r.get('lag_lost', 0) for r in results)} |",
        f"| lookups per second, all nodes at once | "
        f"{sum(r['lookups_per_s'] for r in results):,.0f} |",
        f"| resident memory per node after its index is built, median | "
        f"{statistics.median(r['rss_mb'] for r in results):.0f} MB |",
        f"| wrong answers served | {sum(r['wrong'] for r in results)} |",
    ]
    if gpt is not None:
        from fleet_gptcache import side_by_side

        lines += ["", *side_by_side(results, args.entries, fill_s, gpt_fill_s, percentile)]
    elif note:
        lines += ["", note + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        header = "# Fleet results\n\n" if not args.out.exists() else ""
        with args.out.open("a", encoding="utf-8") as f:
            f.write(header + text + "\n")


if __name__ == "__main__":
    main()
