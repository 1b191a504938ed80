"""One node of a fleet test: a process with its own SemanticCache on the shared PostgreSQL store.

Run by ``tests/test_fleet.py`` in spawned processes. Each node writes its share of the items while
reading random items (which may not be written yet: a miss is fine, a wrong answer is not), waits
for every node's writes to have returned, then looks up every item by a paraphrase (the semantic
tier, through its own FAISS replica) and by its exact text.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from semcache import SemanticCache

from .pgserver import HashEmbedder


class Answer(BaseModel):
    text: str


def question(item: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Fleet item {item}?"}]


def paraphrase(item: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"fleet item {item}"}]


def open_node(dsn: str) -> SemanticCache:
    return SemanticCache(dsn, embedder=HashEmbedder(), verifier=None, threshold=0.9)


def run(dsn: str, node: int, nodes: int, per_node: int, barrier: Any, results: Any) -> None:
    report: dict[str, Any] = {"node": node, "wrong": [], "missing": [], "confirmed": []}
    try:
        with open_node(dsn) as cache:
            rng = random.Random(node)
            barrier.wait()
            for k in range(per_node):
                item = k * nodes + node
                stored = cache.store(
                    question(item), Answer, Answer(text=f"answer {item}"), model="m"
                )
                if stored is not None:
                    report["confirmed"].append(item)
                other = rng.randrange(nodes * per_node)
                hit = cache.lookup(paraphrase(other), Answer, model="m")
                if hit is not None and hit.value.text != f"answer {other}":
                    report["wrong"].append((other, hit.value.text))
            barrier.wait()  # every node's writes have returned
            for item in range(nodes * per_node):
                for messages in (paraphrase(item), question(item)):
                    hit = cache.lookup(messages, Answer, model="m")
                    # Another node's last writes reach this replica with their notification:
                    # a generous deadline, not a speed check.
                    deadline = time.monotonic() + 60
                    while hit is None and time.monotonic() < deadline:
                        time.sleep(0.01)
                        hit = cache.lookup(messages, Answer, model="m")
                    if hit is None:
                        report["missing"].append(item)
                    elif hit.value.text != f"answer {item}":
                        report["wrong"].append((item, hit.value.text))
            report["semantic_hits"] = cache.stats().semantic_hits
    except BaseException as exc:  # reported, so the parent fails with the reason
        report["error"] = repr(exc)
        barrier.abort()
    results.put(report)


def write_until(dsn: str, node: int, log: str, stop: str) -> None:
    """Store items ``node``, ``node + 100_000``, ... and look up earlier ones until ``stop``
    exists (or the process is killed). Each store that returned an id is appended to ``log``
    ("ok <item>"), each wrong answer ("wrong <item> <text>") and each exception ("error ...") too,
    one flushed line at a time, so a SIGKILL loses at most a line being written."""
    import os

    rng = random.Random(node)
    with open(log, "a", encoding="utf-8") as out, open_node(dsn) as cache:
        item = node * 100_000
        while not os.path.exists(stop):
            try:
                if cache.store(question(item), Answer, Answer(text=f"answer {item}"), model="m"):
                    out.write(f"ok {item}\n")
                # Any node's item up to as far as this one got (perhaps not written: a miss).
                earlier = rng.randrange(3) * 100_000 + rng.randrange(item - node * 100_000 + 1)
                hit = cache.lookup(paraphrase(earlier), Answer, model="m")
                if hit is not None and hit.value.text != f"answer {earlier}":
                    out.write(f"wrong {earlier} {hit.value.text}\n")
            except BaseException as exc:
                out.write(f"error {exc!r}\n".replace("\n", " ") + "\n")
            out.flush()
            item += 1


def read_log(path: str) -> tuple[list[int], list[str]]:
    """Confirmed items, and lines that report a problem (a torn last line is ignored)."""
    confirmed: list[int] = []
    problems: list[str] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return confirmed, problems
    for line in text.split("\n")[:-1]:  # the last piece is "" or a line cut by a SIGKILL
        if line.startswith("ok "):
            confirmed.append(int(line[3:]))
        else:
            problems.append(line)
    return confirmed, problems


def store_items(dsn: str, items: list[int]) -> None:
    """Another node: store ``items`` and close (its writes notify the other nodes)."""
    with open_node(dsn) as cache:
        for item in items:
            assert cache.store(question(item), Answer, Answer(text=f"answer {item}"), model="m")
