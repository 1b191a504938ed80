"""One node of a fleet test: a process with its own SemanticCache on the shared PostgreSQL store.

Run by ``tests/test_fleet.py`` in spawned processes. Each node writes its share of the items while
reading random items (which may not be written yet: a miss is fine, a wrong answer is not), waits
for every node's writes to have returned, then looks up every item by a paraphrase (the semantic
tier, through its own FAISS replica) and by its exact text.
"""

from __future__ import annotations

import random
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
                    if hit is None:
                        report["missing"].append(item)
                    elif hit.value.text != f"answer {item}":
                        report["wrong"].append((item, hit.value.text))
            report["semantic_hits"] = cache.stats().semantic_hits
    except BaseException as exc:  # reported, so the parent fails with the reason
        report["error"] = repr(exc)
        barrier.abort()
    results.put(report)
