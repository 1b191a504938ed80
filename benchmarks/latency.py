"""Latency: what one lookup costs, phase by phase, with the torch and ONNX embedders side by side.

For each size N it builds a cache of N entries in one scope and measures, per lookup kind (exact
hit, semantic hit, miss), the whole ``cache.lookup`` call and each phase timed on its own:

    key        cache.plan(): canonical JSON of the request, exact key and scope (SHA-256)
    exact      Store.get_exact(): one indexed SQLite read
    embed      embedder.embed([text]) of the last user message
    search     cache.pipeline.catch_up(scope) (reads rows added since the last search) + FAISS search
    search 1t  the same with FAISS held to one OpenMP thread (not what the cache does today)
    rows       Store.get_many() of the candidates at or above the threshold
    validate   response_model.model_validate_json() + restore_completion() of the served row

Phases are separate calls on the same request right after the timed lookup, so they show where
the time goes; they need not add up to the total exactly (the total also counts bookkeeping).
torch and ONNX run interleaved in one process on the same cache (``cache.embedder`` is swapped:
both have the same name and agree to 0.99+ cosine), so machine noise hits both alike. Verification
is off (``verifier=None``): this measures the cache, not a verifier.

Also: embedder load/export times, single-prompt and bulk embedding speed (ONNX with 1 and 2
threads), cosine agreement with torch on data/, insert throughput, cold open and first semantic
lookup (index build from SQLite) in a new process, resident memory per entry, ``import semcache``.

    python benchmarks/latency.py                      # sizes 1000,10000: about 3 minutes
    python benchmarks/latency.py --sizes 1000,100000 --agreement all
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe
from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
MODEL = "gpt-4o-mini"
SYSTEM = "Extract the support ticket as JSON."
THRESHOLD = 0.85
PACKAGES = ("torch", "onnxruntime", "sentence-transformers", "faiss-cpu", "numpy", "tokenizers")
UNRELATED = [  # miss queries: nothing in a support-ticket cache is about these
    "Explain how a neutron star forms after a supernova.",
    "Give me a recipe for sourdough bread with a rye starter.",
    "What were the main causes of the Thirty Years' War?",
    "How do I tune the low E string on a bass guitar by ear?",
    "Write a haiku about autumn leaves falling into a river.",
    "Which mountains did the first Tour de France climb?",
    "Describe the life cycle of the monarch butterfly.",
    "What is the difference between baroque and classical music?",
    "How deep is the Mariana Trench and who first reached the bottom?",
    "Translate 'the cat sleeps on the windowsill' into Latin.",
]


class Ticket(BaseModel):
    category: str
    priority: str
    order_id: str | None
    product: str | None
    wants_refund: bool


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def completion(answer: dict[str, Any], i: int) -> dict[str, Any]:
    """An OpenAI-shaped raw completion (~700 bytes), as a wrapped client would store."""
    call = {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "Ticket", "arguments": json.dumps(answer)},
    }
    return {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
    }


# -- measuring ------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def pct(samples: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q)) if samples else float("nan")


def ms(seconds: float) -> str:
    if seconds != seconds:  # NaN: not measured
        return "–"
    value = seconds * 1000
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def triple(samples: Sequence[float]) -> str:
    return " / ".join(ms(pct(samples, q)) for q in (50, 95, 99))


def ratio(a: Sequence[float], b: Sequence[float]) -> str:
    if not a or not b:
        return "–"
    return f"{statistics.median(a) / statistics.median(b):.2f}"


def vm_rss() -> int:
    """Resident set size in bytes, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- data -----------------------------------------------------------------------------------------


def load_texts() -> tuple[list[dict[str, Any]], list[tuple[str, str]], list[str]]:
    """data/tickets.jsonl rows (text and answer), the paraphrase pairs of data/pairs/ (label 1),
    and every text of data/pairs/ (paraphrases and look-alikes)."""
    tickets = [json.loads(line) for line in (REPO / "data" / "tickets.jsonl").open()]
    pairs: list[tuple[str, str]] = []
    texts: list[str] = []
    for path in sorted((REPO / "data" / "pairs").glob("*.jsonl")):
        for line in path.open():
            row = json.loads(line)
            texts += [row["a"], row["b"]]
            if row.get("label") == 1:
                pairs.append((row["a"], row["b"]))
    return tickets, pairs, texts


class FixedEmbedder:
    """Vectors from a table (unknown texts get a fixed one): the cache's own cost, no model."""

    name = "sentence-transformers/all-MiniLM-L6-v2"
    dimension = 384

    def __init__(self, table: dict[str, np.ndarray], default: np.ndarray) -> None:
        self.table, self.default = table, default

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.table.get(t, self.default) for t in texts]).astype(np.float32)

    def fits(self, text: str) -> bool:
        return True


# -- sections -------------------------------------------------------------------------------------


def machine() -> list[str]:
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return [
        *describe(PACKAGES),
        f"- Load average (1/5/15 min) at start: {load}. The machine was shared with other "
        "engineers' test runs: absolute times are noisy, ratios within this run are the numbers "
        "to compare (medians over many interleaved repetitions).",
    ]


def subprocess_seconds(code: str, runs: int) -> tuple[float, str]:
    """Median wall time of ``python -c code`` over ``runs`` runs, and the last run's stdout."""
    times, out = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        times.append(time.perf_counter() - start)
        out = done.stdout.strip()
    return statistics.median(times), out


def section_startup(onnx_dir: Path, lines: list[str]) -> None:
    log("startup: import semcache, export, first vector in a new process")
    base, _ = subprocess_seconds("pass", 10)
    imp, heavy = subprocess_seconds(
        "import sys, semcache; print([m for m in ('torch', 'faiss', 'onnxruntime') "
        "if m in sys.modules])",
        10,
    )
    export, _ = subprocess_seconds(
        f"from pathlib import Path; from semcache.embedding.onnx_runtime import OnnxEmbedder; "
        f"OnnxEmbedder(cache_dir=Path({str(onnx_dir)!r})).load()",
        1,
    )
    rss = "; import resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"
    onnx = (
        "from pathlib import Path; from semcache.embedding.onnx_runtime import OnnxEmbedder as E; "
    )
    firsts: dict[str, tuple[float, str]] = {}
    for label, make in (
        ("ONNX int8 (default)", f"E(cache_dir=Path({str(onnx_dir)!r}))"),
        ("ONNX fp32", f"E(quantize=False, cache_dir=Path({str(onnx_dir)!r}))"),
    ):
        firsts[label] = subprocess_seconds(
            f"import sys; {onnx}{make}.embed(['where is my parcel?']); "
            "print([m for m in ('torch', 'transformers') if m in sys.modules])" + rss,
            3,
        )
    firsts["torch"] = subprocess_seconds(
        "from semcache.embedding import SentenceTransformerEmbedder as E; "
        "E().embed(['where is my parcel?']); print([])" + rss,
        3,
    )
    lines += [
        "## Start-up (new processes, medians)",
        "",
        "| what | time | note |",
        "|---|---:|---|",
        f"| `python -c pass` | {ms(base)} ms | interpreter alone, 10 runs |",
        f"| `import semcache` | {ms(imp)} ms | {ms(imp - base)} ms over the interpreter; "
        f"heavy modules loaded: {heavy} |",
        f"| ONNX export (first use, fresh cache dir) | {export:.1f} s | torch + transformers "
        "import, trace, int8 quantization and its agreement check, 1 run |",
    ]
    for label, (seconds, out) in firsts.items():
        heavy_mods, peak = out.splitlines()[-2:]
        lines.append(
            f"| first vector, {label} | {ms(seconds)} ms | import to vector, 3 runs; peak RSS "
            f"{int(peak) / 2**20:.0f} MiB; torch/transformers imported: {heavy_mods} |"
        )
    lines.append("")


def section_embedders(
    embedders: dict[str, Any], texts: list[str], reps: int, lines: list[str]
) -> None:
    log(f"embedders: single prompts x {reps} each, interleaved; bulk")
    samples: dict[str, list[float]] = {k: [] for k in embedders}
    names = list(embedders)
    for i in range(reps):
        text = texts[i % len(texts)]
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate: no order bias
            model = embedders[name]
            samples[name].append(timed(partial(model.embed, [text]))[0])
    bulk_texts = texts[:400]
    bulk: dict[str, float] = {}
    for name, model in embedders.items():
        seconds, _ = timed(partial(model.embed, bulk_texts))
        bulk[name] = len(bulk_texts) / seconds
    torch = samples["torch"]
    from semcache.embedding import bundled_model_path
    from semcache.embedding.onnx_runtime import load_tokenizer

    tokenizer = load_tokenizer(Path(bundled_model_path()), 256)
    tokens = int(statistics.median(len(tokenizer.encode(t).ids) for t in texts))
    lines += [
        f"## Embedding one short prompt (data/tickets.jsonl texts, median {tokens} word pieces)",
        "",
        f"{reps} calls each, round-robin over the embedders. Bulk: {len(bulk_texts)} texts in one "
        "`embed` call (torch: batches of 64 on its threads; ONNX: `workers` = CPU count model "
        "runs at once, each on `threads` threads; fp32 in batches of 32, int8 one text per run).",
        "",
        "| embedder | p50 / p95 / p99 ms | p50 vs torch | bulk texts/s |",
        "|---|---:|---:|---:|",
    ]
    for name, s in samples.items():
        lines.append(f"| {name} | {triple(s)} | {ratio(s, torch)} | {bulk[name]:.0f} |")
    lines.append("")


def section_agreement(
    torch_model: Any, onnx_models: dict[str, Any], texts: list[str], lines: list[str]
) -> None:
    log(f"agreement on {len(texts)} texts")
    reference = torch_model.embed(texts)
    lines += [
        f"## Cosine agreement with torch fp32 ({len(texts)} distinct texts of data/)",
        "",
        "| embedder | min | p1 | median | texts below 0.99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, model in onnx_models.items():
        for how, vectors in (
            ("bulk", model.embed(texts)),
            ("one by one", np.stack([model.embed([t])[0] for t in texts])),
        ):
            cos = (vectors * reference).sum(axis=1)
            lines.append(
                f"| {name}, {how} | {cos.min():.5f} | {np.percentile(cos, 1):.5f} | "
                f"{np.median(cos):.5f} | {int((cos < 0.99).sum())} |"
            )
    lines.append("")


def build(
    path: Path, n: int, base: list[tuple[str, dict[str, Any]]], vectors: np.ndarray, seed: int
) -> tuple[Any, dict[str, np.ndarray], float]:
    """A cache file of ``n`` entries in one scope, written with ``db.put``; returns the open cache,
    the stored real prompts' vectors and the insert time.

    The first entries are real texts with their own vectors; past those, prompts are real texts
    with a variant number and vectors are normalized random mixes of two real vectors plus noise,
    so the index is as crowded as a real one without embedding N texts.
    """
    from semcache import SemanticCache
    from semcache.storage.base import NewEntry

    rng = np.random.default_rng(seed)
    fixed = FixedEmbedder({}, vectors[0])
    cache = SemanticCache(path, threshold=THRESHOLD, embedder=fixed, verifier=None)
    plan = plan_for(cache, "x")
    assert plan is not None
    scope, namespace = plan.keyed.scope, plan.keyed.namespace
    stored: dict[str, np.ndarray] = {}
    put_seconds = 0.0
    for i in range(n):
        if i < len(base):
            text, answer = base[i]
            vector = vectors[i]
            keyed = plan_for(cache, text).keyed
            exact_key, request_json = keyed.exact_key, keyed.request_json
            stored[text] = vector
        else:
            j, k = rng.integers(len(base), size=2)
            text, answer = f"{base[j][0]} (variant {i})", base[j][1]
            mixed = 0.7 * vectors[j] + 0.3 * vectors[k] + rng.normal(0, 0.02, vectors.shape[1])
            vector = (mixed / np.linalg.norm(mixed)).astype(np.float32)
            exact_key = hashlib.sha256(f"synthetic {i}".encode()).hexdigest()
            request_json = "{}"
        entry = NewEntry(
            exact_key=exact_key,
            scope=scope,
            namespace=namespace,
            model=MODEL,
            schema_name="Ticket",
            prompt=text,
            request_json=request_json,
            response_json=json.dumps(answer),
            raw_json=json.dumps(completion(answer, i)),
            usage_json=json.dumps({"total_tokens": 150}),
            total_tokens=150,
            embedding=vector,
        )
        start = time.perf_counter()
        cache.db.put(entry)
        put_seconds += time.perf_counter() - start
    return cache, stored, put_seconds


def plan_for(cache: Any, text: str) -> Any:
    """The cache's plan (keys) for one request of the benchmark's shape."""
    return cache.plan(
        messages=messages(text),
        response_model=Ticket,
        model=MODEL,
        context=None,
        strict=True,
        provider="openai",
        mode="tool_call",
        params={},
    )


def phases(cache: Any, text: str, embedder: Any, flip: bool) -> dict[str, float]:
    """Each step of a lookup for ``text``, timed on its own (see the module docstring).

    The search is also timed with FAISS limited to one OpenMP thread ("search 1t"), right after
    or right before the default one (``flip`` alternates), to show what waking FAISS's second
    thread costs on a busy machine.
    """
    import faiss

    from semcache.serialization import restore_completion

    out: dict[str, float] = {}
    now = time.time()
    out["key"], plan = timed(lambda: plan_for(cache, text))
    keyed = plan.keyed
    out["exact"], row = timed(lambda: cache.db.get_exact(keyed.exact_key, now))
    if row is None:
        out["embed"], vectors = timed(lambda: embedder.embed([text]))

        def search() -> list[tuple[int, float]]:
            index = cache.pipeline.catch_up(keyed.scope)
            found: list[tuple[int, float]] = index.search(keyed.scope, vectors[0], 4)
            return found

        def search_one_thread() -> list[tuple[int, float]]:
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                return search()
            finally:
                faiss.omp_set_num_threads(threads)

        for name in ("search 1t", "search") if flip else ("search", "search 1t"):
            out[name], found = timed(search_one_thread if name == "search 1t" else search)
        ids = [i for i, s in found if s >= THRESHOLD]
        if ids:
            out["rows"], rows = timed(lambda: cache.db.get_many(ids, now))
            row = rows.get(ids[0])
    if row is not None:
        out["validate"], _ = timed(
            lambda: (
                Ticket.model_validate_json(row.response_json),
                restore_completion(row.raw_json),
            )
        )
    return out


PHASES = ("key", "exact", "embed", "search", "search 1t", "rows", "validate")


def section_size(
    n: int,
    workdir: Path,
    base: list[tuple[str, dict[str, Any]]],
    vectors: np.ndarray,
    queries: dict[str, list[str]],
    probe: tuple[str, np.ndarray],
    embedders: dict[str, Any],
    reps: int,
    lines: list[str],
) -> None:
    path = workdir / f"cache-{n}.db"
    log(f"size {n}: building")
    cache, stored, put_seconds = build(path, n, base, vectors, seed=n)
    cache.lookup(messages(probe[0]), Ticket, model=MODEL)  # builds the index before timing
    cache.pipeline.scopes.wait()  # (in the background from HNSW size on)
    totals: dict[tuple[str, str], list[float]] = {(k, e): [] for k in queries for e in embedders}
    parts: dict[tuple[str, str, str], list[float]] = {
        (k, e, p): [] for k in queries for e in embedders for p in PHASES
    }
    outcomes = {(kind, e): 0 for kind in queries for e in embedders}
    log(f"size {n}: {reps} lookups per kind and embedder")
    for i in range(reps):
        for kind, texts in queries.items():
            text = texts[i % len(texts)]
            names = list(embedders) if i % 2 == 0 else list(embedders)[::-1]  # no order bias
            for name in names:
                model = embedders[name]
                cache.pipeline.embedder = model
                seconds, hit = timed(partial(cache.lookup, messages(text), Ticket, model=MODEL))
                totals[kind, name].append(seconds)
                expected = {"exact": "exact", "semantic": "semantic", "miss": None}[kind]
                outcomes[kind, name] += (hit.tier if hit else None) == expected
                for phase, s in phases(cache, text, model, flip=i % 2 == 1).items():
                    parts[kind, name, phase].append(s)
    log(f"size {n}: insert throughput through cache.store")
    store_rates = insert_rates(cache, embedders, base, stored)
    cache.close()
    log(f"size {n}: cold open in a new process")
    cold = cold_open(path, *probe)
    names = list(embedders)
    a, b = names[0], names[1]
    lines += [
        f"## {n:,} entries in one scope",
        "",
        f"Lookups: {reps} per kind and embedder, interleaved. Outcome as intended: "
        + ", ".join(
            f"{k} {outcomes[k, a]}/{reps} ({a}), {outcomes[k, b]}/{reps} ({b})" for k in queries
        )
        + ". Times in ms as p50 / p95 / p99.",
        "",
        f"| lookup | phase | {a} | {b} | {b}/{a} p50 |",
        "|---|---|---:|---:|---:|",
    ]
    for kind in queries:
        lines.append(
            f"| {kind} | **whole `cache.lookup`** | {triple(totals[kind, a])} | "
            f"{triple(totals[kind, b])} | {ratio(totals[kind, b], totals[kind, a])} |"
        )
        for p in PHASES:
            sa, sb = parts[kind, a, p], parts[kind, b, p]
            if sa or sb:
                lines.append(f"| | {p} | {triple(sa)} | {triple(sb)} | {ratio(sb, sa)} |")
    size_mb = path.stat().st_size / 1e6
    lines += [
        "",
        "| other | value |",
        "|---|---:|",
        f"| insert with `db.put` (one transaction each, vector given) | {n / put_seconds:,.0f} "
        "entries/s |",
        *[
            f"| insert with `cache.store`, {k} | {v:,.0f} entries/s |"
            for k, v in store_rates.items()
        ],
        f"| cold open: `SemanticCache(path)` in a new process | {ms(cold['open'])} ms |",
        f"| first semantic lookup there (index built from SQLite) | {ms(cold['first'])} ms |",
        f"| second semantic lookup | {ms(cold['second'])} ms |",
        f"| resident memory added by open + index build, per entry | {cold['rss'] / n:,.0f} B |",
        f"| SQLite file per entry | {size_mb * 1e6 / n:,.0f} B ({size_mb:.1f} MB) |",
        "",
    ]


def insert_rates(
    cache: Any,
    embedders: dict[str, Any],
    base: list[tuple[str, dict[str, Any]]],
    stored: dict[str, np.ndarray],
) -> dict[str, float]:
    """Entries/s through ``cache.store`` (key, JSON round-trip check, embedding, one write)."""
    rates: dict[str, float] = {}
    fixed = FixedEmbedder(stored, next(iter(stored.values())))
    runs = {
        "embedding excluded (vectors looked up)": (fixed, 300),
        **{f"embedding with {k}": (m, 40) for k, m in embedders.items()},
    }
    for label, (model, count) in runs.items():
        cache.pipeline.embedder = model
        start = time.perf_counter()
        for i in range(count):
            text, answer = base[i % len(base)]
            cache.store(
                messages(f"{text} [store {label} {i}]"),
                Ticket,
                Ticket(**answer),
                completion=completion(answer, i),
                model=MODEL,
            )
        rates[label] = count / (time.perf_counter() - start)
    return rates


def cold_open(path: Path, query: str, vector: np.ndarray) -> dict[str, float]:
    """Open the file in a new process, then two semantic lookups (the first builds the index);
    resident memory from before the open to after the index build. Median of 3 runs."""
    code = f"""
import json, sys, time
import numpy as np
import faiss  # imported up front: its own import is not the index build
sys.path.insert(0, {str(REPO / "benchmarks")!r})
from latency import FixedEmbedder, Ticket, messages, MODEL, THRESHOLD, vm_rss
from semcache import SemanticCache
vec = np.array({vector.tolist()!r}, dtype=np.float32)
rss0 = vm_rss()
t0 = time.perf_counter()
cache = SemanticCache({str(path)!r}, threshold=THRESHOLD, embedder=FixedEmbedder({{}}, vec),
                      verifier=None)
t1 = time.perf_counter()
hit = cache.lookup(messages({query!r} + " (cold)"), Ticket, model=MODEL)
cache.pipeline.scopes.wait()  # a scope of HNSW size is built in the background: count it
hit = hit or cache.lookup(messages({query!r} + " (cold)"), Ticket, model=MODEL)
t2 = time.perf_counter()
rss1 = vm_rss()
cache.lookup(messages({query!r} + " (again)"), Ticket, model=MODEL)
t3 = time.perf_counter()
print(json.dumps({{"open": t1 - t0, "first": t2 - t1, "second": t3 - t2, "rss": rss1 - rss0,
                  "hit": hit is not None}}))
"""
    runs = []
    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {k: statistics.median(r[k] for r in runs) for k in ("open", "first", "second", "rss")}


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="entries per cache, comma-separated")
    parser.add_argument("--reps", type=int, default=100, help="lookups per kind and embedder")
    parser.add_argument("--embed-reps", type=int, default=200, help="single-prompt embed calls")
    parser.add_argument("--agreement", default="500", help="texts for the agreement check, or all")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "latency.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()

    from semcache.embedding import SentenceTransformerEmbedder
    from semcache.embedding.onnx_runtime import OnnxEmbedder

    command = " ".join(["python benchmarks/latency.py", *sys.argv[1:]])
    lines = [
        "# Lookup latency",
        "",
        f"`{command}` ({time.strftime('%Y-%m-%d')})",
        "",
        *machine(),
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="semcache-latency-") as tmp:
        workdir = Path(tmp)
        onnx_dir = workdir / "onnx"
        section_startup(onnx_dir, lines)
        torch_model = SentenceTransformerEmbedder()
        models: dict[str, Any] = {
            "torch": torch_model,
            "onnx fp32 1 thread": OnnxEmbedder(quantize=False, cache_dir=onnx_dir),
            "onnx fp32 2 threads": OnnxEmbedder(quantize=False, cache_dir=onnx_dir, threads=2),
            "onnx int8 1 thread": OnnxEmbedder(quantize=True, cache_dir=onnx_dir),
            "onnx int8 2 threads": OnnxEmbedder(quantize=True, cache_dir=onnx_dir, threads=2),
        }
        for model in models.values():
            model.embed(["warm up"])
        tickets, pairs, pair_texts = load_texts()
        ticket_texts = [t["text"] for t in tickets]
        section_embedders(models, ticket_texts, args.embed_reps, lines)

        distinct = list(dict.fromkeys(ticket_texts + pair_texts))
        if args.agreement != "all":
            distinct = ticket_texts + random.Random(0).sample(
                distinct[len(ticket_texts) :], max(0, int(args.agreement) - len(ticket_texts))
            )
        onnx_default = models["onnx int8 1 thread"]
        section_agreement(
            torch_model,
            {"onnx fp32": models["onnx fp32 1 thread"], "onnx int8 (default)": onnx_default},
            distinct,
            lines,
        )

        # Entries: ticket texts with their answers, then paraphrase-pair sources; queries for
        # semantic hits are the other side of pairs whose source is stored and close enough.
        log("embedding the stored texts (ONNX fp32, equal to torch to 1e-6)")
        answers = [t["answer"] for t in tickets]
        sources = list(dict.fromkeys(a for a, _ in pairs))[:1700]
        # Interleaved, so even a small cache holds both kinds.
        base: list[tuple[str, dict[str, Any]]] = []
        for i in range(max(len(tickets), len(sources))):
            if i < len(tickets):
                base.append((tickets[i]["text"], tickets[i]["answer"]))
            if i < len(sources):
                base.append((sources[i], answers[i % len(answers)]))
        fp32 = models["onnx fp32 1 thread"]
        vectors = fp32.embed([text for text, _ in base])
        by_text = {text: vectors[i] for i, (text, _) in enumerate(base)}
        candidates = [(a, b) for a, b in pairs if a in by_text and b not in by_text]
        b_vectors = fp32.embed([b for _, b in candidates])
        close = [
            (a, b)
            for (a, b), v in zip(candidates, b_vectors, strict=True)
            if float(v @ by_text[a]) >= THRESHOLD + 0.05
        ]
        pair = {"torch": torch_model, "onnx int8": onnx_default}
        for n in sizes:
            kept = {text for text, _ in base[:n]}
            semantic = [(a, b) for a, b in close if a in kept][:200]
            queries = {
                "exact": [t for t in ticket_texts if t in kept][:200],
                "semantic": [b for _, b in semantic],
                "miss": UNRELATED,
            }
            probe = (semantic[0][1], by_text[semantic[0][0]])
            section_size(n, workdir, base[:n], vectors[:n], queries, probe, pair, args.reps, lines)

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    lines += [
        f"Run took {time.perf_counter() - started:.0f} s; load average at the end: {load}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
