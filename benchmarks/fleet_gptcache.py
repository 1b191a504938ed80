"""GPTCache beside semcache in ``benchmarks/fleet.py``: the same entries on the same PostgreSQL.

GPTCache 0.1.44 (``pip install -e '.[bench]'``) keeps its rows in SQL (``CacheBase("postgresql")``,
SQLAlchemy over psycopg2) and its vectors in one FAISS file per process (``VectorBase("faiss")``:
an exhaustive ``IDMap,Flat`` L2 index, read from the file when the process opens it and written
back when it closes). Nothing carries a vector stored by one process into another's index: a
fleet of GPTCache nodes on one database is N caches that share rows but not lookups, which the
store-to-hit phase counts.

It is set up to decide as semcache does, on the same vectors:

* ``embedding_func`` returns fleet.py's stand-in vector of the prompt, precomputed before the
  timed lookups (the same memo serves semcache), so neither side pays for an embedding;
* ``SearchDistanceEvaluation()`` with ``similarity_threshold=0.95``: with squared L2 distance on
  unit vectors its rank is ``4 - d^2 = 2 + 2 cos``, so a hit is cosine >= 0.9, semcache's
  threshold in fleet.py; FAISS's ``top_k`` stays 1 (its default);
* ``max_size`` above the entry count: its default, 1000, evicts all but 1000 entries as soon as
  a node opens a filled cache.

Two configurations take turns in the same loop: its defaults (a hit also writes a row to its
report table; FAISS searches with its default OpenMP threads) and "tuned" (``disable_report``,
one FAISS thread, as semcache searches), the faster one and the one ratios are taken against.
Its tables live in their own schema on the server, dropped after the run.
"""

from __future__ import annotations

import importlib.util
import queue
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

THRESHOLD = (0.9 + 1) / 2  # cosine 0.9 on GPTCache's 0..4 rank (see above)
DIMENSION = 384
LAG_ITEMS = 20  # new answers node 0 puts during the store-to-hit phase
LAG_WINDOW_S = 1.0  # how long another node keeps looking for each of them


def missing() -> str | None:
    """Why the GPTCache side cannot run here, or None. Checked before anything imports it:
    GPTCache runs ``pip install`` itself when its PostgreSQL driver is absent."""
    for module, package in (("gptcache", "gptcache"), ("sqlalchemy", "SQLAlchemy"),
                            ("psycopg2", "psycopg2-binary")):  # fmt: skip
        if importlib.util.find_spec(module) is None:
            return (
                f"GPTCache side skipped: {package} is not installed "
                "(pip install -e '.[bench]' installs what it needs)"
            )
    return None


def sql_url(server: str, schema: str) -> str:
    """SQLAlchemy's URL for ``server`` (a libpq URL) with every table in ``schema``."""
    rest = server.split("://", 1)[1]
    joiner = "&" if "?" in rest else "?"
    return f"postgresql+psycopg2://{rest}{joiner}options=-csearch_path%3D{schema}"


class Side:
    """One process's GPTCache: the shared SQL tables and its own FAISS file."""

    def __init__(self, url: str, index_path: Path, max_size: int, embed: Callable[[str], Any]):
        import faiss
        from gptcache import Cache, Config
        from gptcache.manager import CacheBase, VectorBase, get_data_manager
        from gptcache.processor.pre import get_prompt
        from gptcache.similarity_evaluation import SearchDistanceEvaluation

        self._faiss = faiss
        self.default_threads = faiss.omp_get_max_threads()
        self.data_manager = get_data_manager(
            CacheBase("postgresql", sql_url=url),
            VectorBase("faiss", dimension=DIMENSION, index_path=str(index_path)),
            max_size=max_size,
        )

        def embedding(text: str, **_: Any) -> Any:
            return embed(text)

        self.caches = {}
        for kind, report in (("default", True), ("tuned", False)):
            cache = Cache()
            cache.init(
                pre_embedding_func=get_prompt,
                embedding_func=embedding,
                data_manager=self.data_manager,
                similarity_evaluation=SearchDistanceEvaluation(),
                config=Config(similarity_threshold=THRESHOLD, disable_report=not report),
            )
            self.caches[kind] = cache

    def prepare(self, kind: str) -> None:
        """Untimed, before each lookup: FAISS's thread count is process-wide, and semcache sets
        its own around each search."""
        self._faiss.omp_set_num_threads(1 if kind == "tuned" else self.default_threads)

    def get(self, text: str, kind: str = "tuned") -> str | None:
        from gptcache.adapter.api import get

        answer = get(text, cache_obj=self.caches[kind])
        return None if answer is None else str(answer)

    def phases_ms(self) -> tuple[float, float]:
        """GPTCache's own timers for the tuned lookups so far, means: the FAISS search, and
        fetching the found row from SQL (with its ``last_access`` update and commit)."""
        report = self.caches["tuned"].report
        search, data = report.op_search, report.op_data
        return (1000 * search.total_time / max(1, search.count),
                1000 * data.total_time / max(1, data.count))  # fmt: skip

    def put(self, text: str, answer: str) -> None:
        from gptcache.adapter.api import put

        put(text, answer, cache_obj=self.caches["tuned"])

    def close(self) -> None:
        """Close once, without writing the FAISS file: each ``Cache.init`` registered an atexit
        hook that closes the data manager again, rewriting the whole file."""
        self.data_manager.s.close()
        self.data_manager.close = lambda: None


def fill(url: str, index_path: Path, texts: Sequence[str], answers: Sequence[str],
         vectors: np.ndarray, batch: int = 1000) -> float:  # fmt: skip
    """Store every entry through GPTCache's bulk ``import_data`` and write its FAISS file, as
    one process that filled the cache would leave it; seconds taken."""
    from gptcache.manager import CacheBase, VectorBase, get_data_manager

    began = time.perf_counter()
    manager = get_data_manager(
        CacheBase("postgresql", sql_url=url),
        VectorBase("faiss", dimension=DIMENSION, index_path=str(index_path)),
        max_size=len(texts) + 1000,
    )
    for lo in range(0, len(texts), batch):
        hi = min(len(texts), lo + batch)
        manager.import_data(
            list(texts[lo:hi]), list(answers[lo:hi]), list(vectors[lo:hi]), [None] * (hi - lo)
        )
    manager.flush()
    manager.s.close()
    return time.perf_counter() - began


def open_node(url: str, filled: Path, me: int, max_size: int,
              embed: Callable[[str], Any]) -> tuple[Side, float]:  # fmt: skip
    """Node ``me``'s GPTCache: a copy of the filled FAISS file (its own disk, in a real fleet),
    opened with the shared tables; seconds to open (read the file and every row's id)."""
    own = filled.parent / f"node{me}.index"
    shutil.copyfile(filled, own)
    began = time.perf_counter()
    side = Side(url, own, max_size, embed)
    return side, time.perf_counter() - began


def lag_writer(side: Side, items: Sequence[tuple[str, str, str]], lag_queue: Any,
               readers: int) -> int:  # fmt: skip
    """Node 0 puts each new answer (stored text, probe text, answer), checks that it finds it
    itself, and announces it; returns how many it found itself (its own index has them)."""
    own = 0
    for stored, probe, answer in items:
        side.put(stored, answer)
        side.prepare("tuned")
        own += side.get(probe) == answer
        for _ in range(readers):
            lag_queue.put((probe, answer, time.time()))
        time.sleep(0.02)
    return own


def lag_reader(side: Side, count: int, lag_queue: Any) -> dict[str, Any]:
    """Another node looks for each announced answer, by its probe text, for ``LAG_WINDOW_S``."""
    found, wrong, lags = 0, 0, []
    for _ in range(count):
        try:
            probe, answer, stored_at = lag_queue.get(timeout=120)
        except queue.Empty:
            break
        side.prepare("tuned")
        while time.time() - stored_at < LAG_WINDOW_S:
            served = side.get(probe)
            if served is not None:
                found += served == answer
                wrong += served != answer
                lags.append(time.time() - stored_at)
                break
            time.sleep(0.005)
    return {"found": found, "tried": count, "wrong": wrong, "lags": lags}


def side_by_side(
    results: list[dict[str, Any]], entries: int, fill_s: float, gpt_fill_s: float,
    percentile: Callable[[list[float], float], float],
) -> list[str]:  # fmt: skip
    """The fixed table: semcache beside GPTCache's two configurations, from every node's
    interleaved lookups (p50: median of the nodes'; p99: the worst node's)."""
    nodes = len(results)
    names = {"plain": "semcache", "tuned": "GPTCache, tuned", "default": "GPTCache, defaults"}

    def ms(kind: str, at: int) -> float:
        values = [r["side_by_side"][kind]["ms"][at] for r in results]
        return statistics.median(values) if at == 0 else max(values)

    def total(kind: str, key: str) -> int:
        return sum(int(r["side_by_side"][kind][key]) for r in results)

    probes = total("plain", "probes")
    sem_lags = [lag for r in results for lag in r["lag_s"]]
    readers = [r["gpt_lag"] for r in results if "gpt_lag" in r]
    found = sum(r["found"] for r in readers)
    tried = sum(r["tried"] for r in readers)
    gpt_wrong_lag = sum(r["wrong"] for r in readers)
    own = sum(int(r.get("gpt_own", 0)) for r in results)
    row = " | ".join
    lines = [
        f"| {nodes} nodes, {entries:,} entries, one PostgreSQL | "
        + row(names.values())
        + " | GPTCache tuned ÷ semcache |",
        "|---|---:|---:|---:|---:|",
    ]
    for at, label in ((0, "p50"), (1, "p99")):
        cells = [f"{ms(kind, at):.2f} ms" for kind in names]
        lines.append(
            f"| semantic lookup, vector precomputed, {label} | {row(cells)} | "
            f"**{ms('tuned', at) / ms('plain', at):.1f}x** |"
        )
    search = statistics.median(r["gpt_phases_ms"][0] for r in results)
    data = statistics.median(r["gpt_phases_ms"][1] for r in results)
    lines.append(
        f"| of which, by GPTCache's own timers (means, median of nodes): FAISS search / SQL "
        f"fetch of the row | - | {search:.2f} / {data:.2f} ms | | |"
    )
    cells = [f"{total(k, 'hits'):,} ({total(k, 'hits') / probes:.1%})" for k in names]
    lines.append(f"| hits of {probes:,} probes (paraphrases of stored prompts) | {row(cells)} | |")
    cells = [str(total(k, "wrong")) for k in names]
    lines.append(f"| wrong answers served (another prompt's answer) | {row(cells)} | |")
    if nodes > 1:
        sem = (
            f"all {len(sem_lags)} found, p50 {percentile(sem_lags, 0.5):.1f} / "
            f"p99 {percentile(sem_lags, 0.99):.1f} ms"
            if sem_lags
            else "-"
        )
        gpt = (
            f"{found} of {tried} found within {LAG_WINDOW_S:.0f} s"
            f" ({gpt_wrong_lag} wrong; the writing node found {own} of {LAG_ITEMS} itself)"
        )
        lines.append(f"| store-to-hit on another node | {sem} | {gpt} | (same) | |")
    open_s = statistics.median(r["gpt_open_s"] for r in results)
    cold_s = statistics.median(r["cold_start_s"] for r in results)
    lines += [
        f"| fill, one process (store_many / import_data) | {entries / fill_s:,.0f} entries/s | "
        f"{entries / gpt_fill_s:,.0f} entries/s | (same) | |",
        f"| node start, median (semcache: read vectors + build its index; GPTCache: read its "
        f"own FAISS file + every id) | {cold_s:.2f} s | {open_s:.2f} s | (same) | |",
    ]
    return lines
