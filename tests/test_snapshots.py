"""Prebuilt index snapshots on PostgreSQL: a new node downloads a scope's index and catches up
from the change feed instead of building, and ends up holding what a fresh build would.

Scopes of HNSW size are made small here (``HNSW_AT`` = 50) so that graphs of a hundred entries
go through the same code as a million; a graph that small is searched exhaustively, so a
replica and a fresh build must return the very same neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from semcache import SemanticCache
from semcache.index import vector_index
from semcache.index.vector_index import VectorIndex
from semcache.storage.postgres import PostgresStore

from .pgserver import HashEmbedder, admin, pg_dsn  # noqa: F401

MODEL = "big"


class Answer(BaseModel):
    text: str


def ask(item: int, tail: str = "?") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Snapshot item {item}{tail}"}]


@pytest.fixture(autouse=True)
def small_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "HNSW_AT", 50)


def node(dsn: str) -> SemanticCache:
    return SemanticCache(dsn, embedder=HashEmbedder(), verifier=None, threshold=0.9)


def started(cache: SemanticCache, item: int = 0) -> str:
    """Touch the big scope on ``cache`` and wait until its index is ready and published;
    returns the scope."""
    cache.lookup(ask(item, ""), Answer, model=MODEL)
    scope = scope_of(cache)
    assert cache.pipeline.scopes.wait(scope, timeout=120, publishing=True)
    return scope


def scope_of(cache: SemanticCache) -> str:
    exact = cache.lookup(ask(0), Answer, model=MODEL)  # item 0 is stored by every test
    assert exact is not None and exact.tier == "exact"
    return exact.scope


def fill(cache: SemanticCache, items: range) -> None:
    cache.store_many([(ask(i), Answer(text=f"answer {i}")) for i in items], Answer, model=MODEL)


def live(store: PostgresStore, scope: str) -> dict[int, np.ndarray]:
    changes = store.changes(scope, 0, HashEmbedder.dimension)
    return dict(zip(changes.ids.tolist(), changes.vectors, strict=True))


def neighbours(index: VectorIndex, scope: str, queries: np.ndarray, k: int) -> list[list[int]]:
    return [[i for i, _ in index.search(scope, q, k)] for q in queries]


def fresh_build(store: PostgresStore, scope: str) -> VectorIndex:
    index = VectorIndex(HashEmbedder.dimension)
    changes = store.changes(scope, 0, HashEmbedder.dimension)
    index.add(scope, changes.ids, changes.vectors, cursor=changes.cursor)
    assert index.kind(scope) == "hnsw"
    return index


def assert_like_a_fresh_build(cache: SemanticCache, scope: str, gone: list[int]) -> None:
    store = cache.pipeline.store
    assert isinstance(store, PostgresStore)
    index = cache.pipeline.scopes.index
    assert index is not None
    alive = live(store, scope)
    ids = list(alive)
    queries = np.vstack([alive[i] for i in ids])
    mine = neighbours(index, scope, queries, 8)
    assert [found[0] for found in mine] == ids  # every live entry is its own nearest neighbour
    assert mine == neighbours(fresh_build(store, scope), scope, queries, 8)
    everything = {i for found in neighbours(index, scope, queries, len(ids) + 20) for i in found}
    assert everything == set(ids) and not everything & set(gone)


@pytest.fixture
def published(pg_dsn: str) -> Iterator[tuple[str, str]]:  # noqa: F811
    """A database whose big scope (120 entries) has a snapshot, published by a node that built
    it; yields the URL and the scope."""
    with node(pg_dsn) as builder:
        fill(builder, range(120))
        scope = started(builder)
        starts = builder.pipeline.scopes.cold_starts[scope]
        assert starts.source == "build" and scope in builder.pipeline.scopes.published
    yield pg_dsn, scope


def test_a_new_node_starts_from_the_snapshot_and_catches_up(published: tuple[str, str]) -> None:
    """Entries added, replaced and deleted after the snapshot (and deletions before a second
    one, carried as tombstones) all reach the new node: it equals a fresh build."""
    dsn, scope = published
    with node(dsn) as writer:
        store = writer.pipeline.store
        assert isinstance(store, PostgresStore)
        first = store.snapshot_head(scope)
        assert first is not None and first.count == 120 and first.tombstones == []
        before = sorted(live(store, scope))
        early = before[1:4]  # item 0 stays: it names the scope
        for entry_id in early:  # removed before the second snapshot: carried as tombstones
            store.delete(entry_id)
        started(writer)
        again = writer.pipeline.scopes.publish(scope)
        assert again is not None and again.vectors == 120
        second = store.snapshot_head(scope)
        assert second is not None and second.seq > first.seq
        assert sorted(second.tombstones) == early
        fill(writer, range(120, 140))  # added after it
        late = [*before[10:15], max(live(store, scope))]  # deleted after it, old and new
        for entry_id in late:
            store.delete(entry_id)
        writer.store(ask(7), Answer, Answer(text="answer 7, revised"), model=MODEL)  # replaced
    with node(dsn) as newcomer:
        assert newcomer.lookup(ask(130, ""), Answer, model=MODEL) is None  # still loading
        scopes = newcomer.pipeline.scopes
        assert scopes.wait(scope, timeout=120, publishing=True)
        start = scopes.cold_starts[scope]
        assert start.source == "snapshot" and not start.refused
        # 19 additions (the 20th was deleted again before it was read), 6 removals, and the
        # replacement's addition and removal.
        assert start.changes == 19 + len(late) + 2
        assert scope not in scopes.published  # nothing new to publish
        assert_like_a_fresh_build(newcomer, scope, early + late)
        hit = newcomer.lookup(ask(130, ""), Answer, model=MODEL)
        assert hit is not None and hit.tier == "semantic" and hit.value.text == "answer 130"
        revised = newcomer.lookup(ask(7, ""), Answer, model=MODEL)
        assert revised is not None and revised.value.text == "answer 7, revised"


def test_a_corrupt_snapshot_is_treated_as_absent_and_replaced(
    published: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    dsn, scope = published
    with admin() as conn:
        schema = dsn.split("%3D")[1].split("&")[0]
        flipped = conn.execute(
            f"UPDATE {schema}.index_snapshot_chunks "
            "SET data = set_byte(data, 4000, (get_byte(data, 4000) + 1) % 256) WHERE n = 0"
        ).rowcount
        assert flipped == 1
    caplog.set_level(logging.INFO, logger="semcache")
    with node(dsn) as newcomer:
        store = newcomer.pipeline.store
        assert isinstance(store, PostgresStore)
        bad = store.snapshot_head(scope)
        started(newcomer)
        start = newcomer.pipeline.scopes.cold_starts[scope]
        assert start.source == "build" and "checksum" in start.refused
        for item in range(5):
            hit = newcomer.lookup(ask(item, ""), Answer, model=MODEL)
            assert hit is not None and hit.value.text == f"answer {item}"
        assert_like_a_fresh_build(newcomer, scope, [])
        replaced = store.snapshot_head(scope)  # the node that rebuilt replaced the damaged one
        assert bad is not None and replaced is not None and replaced.snapshot != bad.snapshot
    warned = [r for r in caplog.records if "prebuilt index" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    with node(dsn) as third:
        started(third)
        assert third.pipeline.scopes.cold_starts[scope].source == "snapshot"


def test_a_snapshot_of_another_embedder_is_not_used(
    pg_dsn: str,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="semcache")
    with node(pg_dsn) as writer:
        fill(writer, range(80))
        store = writer.pipeline.store
        assert isinstance(store, PostgresStore)
        scope = scope_of(writer)
        owner = store.settings()["database_id"]
        foreign = VectorIndex(HashEmbedder.dimension, owner=owner, embedder="another-model")
        changes = store.changes(scope, 0, HashEmbedder.dimension)
        foreign.add(scope, changes.ids, changes.vectors, cursor=changes.cursor)
        exported = foreign.export(scope, tmp_path / "foreign.faiss")
        assert exported is not None
        assert store.publish_snapshot(scope, tmp_path / "foreign.faiss", exported.meta, [])
    with node(pg_dsn) as first:  # the head row names the other embedder: not even downloaded
        started(first)
        start = first.pipeline.scopes.cold_starts[scope]
        assert start.source == "build" and start.download_s == 0.0
    noted = [r.getMessage() for r in caplog.records if "prebuilt index" in r.getMessage()]
    assert len(noted) == 1 and "another-model" in noted[0]
    with admin() as conn:  # a head row that lies: the file's own header still says so
        schema = pg_dsn.split("%3D")[1].split("&")[0]
        conn.execute(
            f"UPDATE {schema}.index_snapshots SET embedder = %s, seq = seq + 1000000",
            (HashEmbedder.name,),
        )
    with node(pg_dsn) as second:
        started(second)
        start = second.pipeline.scopes.cold_starts[scope]
        assert start.source == "build" and "another-model" in start.refused
        assert_like_a_fresh_build(second, scope, [])


def test_a_snapshot_older_than_the_feed_kept_is_not_used(published: tuple[str, str]) -> None:
    dsn, scope = published
    with node(dsn) as writer:
        fill(writer, range(120, 125))
        store = writer.pipeline.store
        assert isinstance(store, PostgresStore)
        assert store.prune_feed(float("inf")) > 0  # the feed no longer reaches the snapshot
    with node(dsn) as newcomer:
        started(newcomer)
        start = newcomer.pipeline.scopes.cold_starts[scope]
        assert start.source == "build" and "older than the change feed" in start.refused
        assert_like_a_fresh_build(newcomer, scope, [])


def test_one_node_republishes_as_the_scope_grows_and_the_others_skip(
    published: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from semcache import scopes as scopes_module

    monkeypatch.setattr(scopes_module, "PUBLISH_AFTER", 10)
    dsn, scope = published
    with node(dsn) as a, node(dsn) as b:
        for cache in (a, b):
            started(cache)
            assert cache.pipeline.scopes.cold_starts[scope].source == "snapshot"
        store = a.pipeline.store
        assert isinstance(store, PostgresStore)
        first = store.snapshot_head(scope)
        fill(a, range(120, 125))
        for cache in (a, b):
            started(cache)  # both apply the five new entries
            cache.pipeline.scopes.save(publish=True)
            assert cache.pipeline.scopes.wait(scope, timeout=120, publishing=True)
        assert scope not in a.pipeline.scopes.published  # under PUBLISH_AFTER: nothing
        fill(a, range(125, 140))
        for cache in (a, b):
            started(cache)
        a.pipeline.scopes.save(publish=True)
        assert a.pipeline.scopes.wait(scope, timeout=120, publishing=True)
        b.pipeline.scopes.save(publish=True)
        assert b.pipeline.scopes.wait(scope, timeout=120, publishing=True)
        second = store.snapshot_head(scope)
        assert first is not None and second is not None and second.count == 140
        assert second.seq > first.seq and a.pipeline.scopes.published[scope].vectors == 140
        assert scope not in b.pipeline.scopes.published  # a published first: b counts afresh
        assert b.pipeline.scopes.index is not None
        assert b.pipeline.scopes.index.unsaved(scope) == 0
