"""Fleet mode: PostgreSQL is the system of record, each node's FAISS index a replica of it.

The replicas catch up from the change feed, which must never skip an entry that commits after a
later-numbered one, must carry removals to every node, and must be re-checked: a replica that is
behind may cost a hit, never serve a deleted, expired, moved or altered entry.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import numpy as np
import psycopg

from semcache import SemanticCache
from semcache.requests import entry_for
from semcache.storage.postgres.entries import insert

from . import fleet_node
from .fleet_node import Answer, open_node, paraphrase, question
from .pgserver import HashEmbedder, admin, eventually


def schema_of(dsn: str) -> str:
    return dsn.split("%3D")[1].split("&")[0]


def planned_entry(cache: SemanticCache, item: int) -> Any:
    plan = cache.plan(
        messages=question(item), response_model=Answer, model="m", context=None, strict=True,
        provider="openai", mode="tool_call", params={},
    )  # fmt: skip
    assert plan is not None
    vector = cache.embedder.embed([plan.keyed.text or ""])[0]
    return plan.keyed.scope, entry_for(plan, Answer(text=f"answer {item}"), None, vector, None)


def held(cache: SemanticCache, scope: str) -> int:
    index = cache.pipeline.catch_up(scope)
    return index.size(scope) - len(index._scopes[scope].tombstones)


def test_an_entry_committed_after_a_later_id_is_not_skipped(pg_dsn: str) -> None:
    """Writer A takes id 1 and commits late; B takes id 2 and commits first. A replica that
    has read id 2 must still find id 1 (an id watermark would be past it)."""
    with open_node(pg_dsn) as writer, open_node(pg_dsn) as reader:
        scope, first = planned_entry(writer, 1)
        _, second = planned_entry(writer, 2)
        slow = psycopg.connect(pg_dsn, autocommit=True)
        try:
            with slow.transaction():
                early_id, _ = insert(slow, first, time.time())
                writer.pipeline.store.listener.announce(slow, [scope])  # as put() does, at commit
                late_id, _ = writer.pipeline.store.put(second)
                assert early_id < late_id
                hit = reader.lookup(paraphrase(2), Answer, model="m")
                assert hit is not None and hit.entry_id == late_id
                assert reader.lookup(paraphrase(1), Answer, model="m") is None  # not committed
            # Committed: the reader learns it from the notification sent at commit.
            eventually(
                lambda: reader.lookup(paraphrase(1), Answer, model="m") is not None,
                "the late-committing entry is found",
            )
            hit = reader.lookup(paraphrase(1), Answer, model="m")
            assert hit is not None and hit.entry_id == early_id and hit.tier == "semantic"
            assert hit.value.text == "answer 1"
        finally:
            slow.close()
        # What an id watermark would have read after seeing entry 2: nothing.
        assert reader.pipeline.store.vectors_since(scope, late_id, 64)[0].tolist() == []


def test_deletions_expiries_and_evictions_reach_every_replica(pg_dsn: str) -> None:
    with open_node(pg_dsn) as a, open_node(pg_dsn) as b:
        ids = [
            a.store(question(i), Answer, Answer(text=f"answer {i}"), model="m") for i in range(4)
        ]
        scope = planned_entry(a, 0)[0]
        assert held(b, scope) == 4
        a.pipeline.store.delete(ids[0])  # e.g. mark_wrong on an exact hit, on another node
        assert held(b, scope) == 3
        a.store(question(9), Answer, Answer(text="answer 9"), model="m", ttl=0.01)
        assert held(b, scope) == 4
        time.sleep(0.05)
        assert a.pipeline.store.evict_expired(time.time())
        assert held(b, scope) == 3
        assert a.pipeline.store.evict_lru(1)
        assert held(b, scope) == 1 and len(b) == 1


def test_a_replica_behind_the_database_never_serves_a_wrong_answer(pg_dsn: str) -> None:
    """Rows changed behind the feed's back (as an operator might): every hit is re-checked
    against the row (alive, not expired, same scope, similarity from the stored vector)."""
    table = f"{schema_of(pg_dsn)}.entries"
    other = np.ascontiguousarray(HashEmbedder().embed(["unrelated text"])[0], "<f4").tobytes()
    changes = [
        "expires_at = extract(epoch FROM now()) - 1",
        "scope = 'another scope'",
        "embedding = %(other)s",
    ]
    with open_node(pg_dsn) as node, admin() as conn:
        for item, change in enumerate(changes):
            entry_id = node.store(question(item), Answer, Answer(text=f"answer {item}"), model="m")
            assert node.lookup(paraphrase(item), Answer, model="m") is not None  # in the replica
            conn.execute(
                f"UPDATE {table} SET {change} WHERE id = %(id)s", {"id": entry_id, "other": other}
            )
            assert node.lookup(paraphrase(item), Answer, model="m") is None, change


def test_a_replica_older_than_the_pruned_feed_reloads(pg_dsn: str) -> None:
    with open_node(pg_dsn) as a, open_node(pg_dsn) as b:
        a.store(question(1), Answer, Answer(text="answer 1"), model="m")
        scope = planned_entry(a, 1)[0]
        assert held(b, scope) == 1
        a.store(question(2), Answer, Answer(text="answer 2"), model="m")
        first = a.store(question(3), Answer, Answer(text="answer 3"), model="m")
        assert first is not None
        a.pipeline.store.delete(first)
        assert a.pipeline.store.prune_feed(time.time() + 1) >= 3
        hit = b.lookup(paraphrase(2), Answer, model="m")
        assert hit is not None and hit.value.text == "answer 2"
        assert held(b, scope) == 2


def test_three_processes_writing_and_reading_at_once(pg_dsn: str) -> None:
    """Every write that returned is found by every node, by both tiers; no wrong answer."""
    nodes, per_node = 3, 30
    with open_node(pg_dsn):
        pass  # migrate once, so the nodes start on a current schema
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(nodes, timeout=300)
    results = context.Queue()
    workers = [
        context.Process(target=fleet_node.run, args=(pg_dsn, n, nodes, per_node, barrier, results))
        for n in range(nodes)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert [r.get("error") for r in reports] == [None] * nodes, reports
    confirmed = sorted(item for r in reports for item in r["confirmed"])
    assert confirmed == list(range(nodes * per_node))
    for report in reports:
        assert report["wrong"] == [] and report["missing"] == [], report
        assert report["semantic_hits"] >= nodes * per_node


def _use_and_close(cache: SemanticCache) -> None:
    hit = cache.lookup(paraphrase(1), Answer, model="m")
    assert hit is not None and hit.value.text == "answer 1"
    assert cache.store(question(2), Answer, Answer(text="answer 2"), model="m") is not None
    cache.close()


def test_a_forked_child_leaves_its_parents_connections_alone(pg_dsn: str) -> None:
    """A pre-fork server's workers inherit the cache: each opens its own connections, and
    closing the cache in a child must not end the parent's session on the server."""
    with open_node(pg_dsn) as cache:
        cache.store(question(1), Answer, Answer(text="answer 1"), model="m")
        assert cache.lookup(paraphrase(1), Answer, model="m") is not None
        child = multiprocessing.get_context("fork").Process(target=_use_and_close, args=(cache,))
        child.start()
        child.join(timeout=120)
        assert child.exitcode == 0
        eventually(  # the child's write, notified at its commit
            lambda: cache.lookup(paraphrase(2), Answer, model="m") is not None,
            "the child's entry is found",
        )
        hit = cache.lookup(paraphrase(2), Answer, model="m")
        assert hit is not None and hit.value.text == "answer 2"
        assert cache.stats().store_outages == 0
