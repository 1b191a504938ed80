"""``search="pgvector"``: lookups search in PostgreSQL, and serve what the local replica would.

These run on a private PostgreSQL 16 with pgvector (``tests/pgvector_server.py``); the shared
test server, which has no pgvector, checks that the choice is refused there with a clear error
and that nothing of it reaches a database that never asked for it.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from pydantic import BaseModel

from semcache import SemanticCache, UsageError
from semcache.index.vector_index import VectorIndex
from semcache.ops.admin import get_entry
from semcache.storage.base import NewEntry
from semcache.storage.postgres import PostgresStore, migrations, vectors

from .pgserver import HashEmbedder


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


QUESTIONS = [f"question number {n} about topic {n % 7}" for n in range(40)]


def test_pgvector_serves_the_hits_the_local_replica_serves(vector_dsn: str) -> None:
    embedder = HashEmbedder()
    with (
        SemanticCache(vector_dsn, embedder=embedder, threshold=0.9) as local,
        SemanticCache(vector_dsn, embedder=embedder, threshold=0.9, search="pgvector") as pgv,
    ):
        assert (local.search, pgv.search) == ("local", "pgvector")
        for n, text in enumerate(QUESTIONS):  # two scopes: the model differs
            local.store(user(text), Answer, Answer(text=text), model=f"m{n % 2}")
        served = 0
        for n, text in enumerate([*QUESTIONS, "an unrelated question"]):
            query = user(text.upper() + "?")  # a near-duplicate: same core, other noise
            ours = pgv.lookup(query, Answer, model=f"m{n % 2}")
            theirs = local.lookup(query, Answer, model=f"m{n % 2}")
            if theirs is None:
                assert ours is None
                continue
            assert ours is not None and ours.tier == theirs.tier == "semantic"
            assert (ours.entry_id, ours.value.text) == (theirs.entry_id, text)
            assert ours.similarity == pytest.approx(theirs.similarity, abs=1e-6)
            served += 1
        assert served == len(QUESTIONS)
        assert pgv.lookup(user("AN UNRELATED QUESTION"), Answer, model="m0") is None


def test_the_database_proposes_the_exact_nearest_entries(vector_dsn: str) -> None:
    rng = np.random.default_rng(7)
    vectors_ = rng.standard_normal((300, 32)).astype(np.float32)
    vectors_ /= np.linalg.norm(vectors_, axis=1, keepdims=True)
    store = PostgresStore(vector_dsn, search="pgvector")
    try:
        ids = [
            store.put(_entry(f"k{n}", "s" if n < 250 else "t", vectors_[n]))[0] for n in range(300)
        ]
        index = VectorIndex(32)
        index.add("s", np.array(ids[:250]), vectors_[:250])
        for query in vectors_[:250:10] + 0.05 * rng.standard_normal((25, 32)).astype(np.float32):
            query /= np.linalg.norm(query)
            found = store.nearest("s", query, 4, time.time())
            expected = index.search("s", query, 4)
            assert [i for i, _ in found] == [i for i, _ in expected]
            assert np.allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)
        # a scope with fewer entries than asked for gets them all, and only its own
        assert {i for i, _ in store.nearest("t", vectors_[260], 100, time.time())} == set(ids[250:])
    finally:
        store.close()


def test_scopes_and_namespaces_stay_apart(vector_dsn: str) -> None:
    embedder = HashEmbedder()
    with (
        SemanticCache(vector_dsn, embedder=embedder, search="pgvector") as a,
        SemanticCache(vector_dsn, embedder=embedder, search="pgvector", namespace="t2") as b,
    ):
        a.store(user("Where is my parcel?"), Answer, Answer(text="tracking"), model="m")
        hit = a.lookup(user("where is my parcel"), Answer, model="m")
        assert hit is not None and hit.tier == "semantic" and hit.value.text == "tracking"
        assert a.lookup(user("where is my parcel"), Answer, model="other") is None  # scope
        assert b.lookup(user("where is my parcel"), Answer, model="m") is None  # namespace
        b.store(user("Where is my parcel?"), Answer, Answer(text="tenant two"), model="m")
        again = a.lookup(user("WHERE IS MY PARCEL"), Answer, model="m")
        assert again is not None and again.value.text == "tracking"


def test_deleted_expired_and_replaced_entries_are_never_served(vector_dsn: str) -> None:
    embedder = HashEmbedder()
    with (
        SemanticCache(vector_dsn, embedder=embedder, search="pgvector") as cache,
        SemanticCache(vector_dsn, embedder=embedder) as writer,  # another node, searching locally
    ):
        writer.store(user("Short lived"), Answer, Answer(text="x"), model="m", ttl=0.2)
        assert cache.lookup(user("short lived"), Answer, model="m") is not None
        time.sleep(0.3)
        assert cache.lookup(user("short lived"), Answer, model="m") is None  # expired
        gone = writer.store(user("Deleted soon"), Answer, Answer(text="y"), model="m")
        assert gone is not None and cache.lookup(user("deleted soon"), Answer, model="m")
        writer.pipeline.store.delete(gone)
        assert cache.lookup(user("deleted soon"), Answer, model="m") is None  # deleted
        writer.store(user("Replaced"), Answer, Answer(text="old"), model="m")
        writer.store(user("Replaced"), Answer, Answer(text="new"), model="m")
        hit = cache.lookup(user("replaced"), Answer, model="m")
        assert hit is not None and hit.value.text == "new"
        store = cache.pipeline.store
        assert isinstance(store, PostgresStore)
        proposed = store.nearest(hit.scope, embedder.embed(["deleted soon"])[0], 10, time.time())
        assert gone not in {i for i, _ in proposed}


def test_the_column_is_migration_5_and_every_writer_fills_it(vector_dsn: str) -> None:
    embedder = HashEmbedder()
    with SemanticCache(vector_dsn, embedder=embedder) as local:  # written before pgvector
        local.store(user("Written first"), Answer, Answer(text="a"), model="m")
        with local.pipeline.store.reading() as conn:  # type: ignore[attr-defined]
            assert vectors.VERSION not in migrations.applied(conn)
        with SemanticCache(vector_dsn, embedder=embedder, search="pgvector") as pgv:
            hit = pgv.lookup(user("written first"), Answer, model="m")  # adds the column
            assert hit is not None and hit.value.text == "a"
            local.store(user("Written after"), Answer, Answer(text="b"), model="m")
            hit = pgv.lookup(user("written after"), Answer, model="m")
            assert hit is not None and hit.value.text == "b"
            store = pgv.pipeline.store
            assert isinstance(store, PostgresStore) and store.pgvector is not None
            with store.reading() as conn:
                assert vectors.VERSION == 5 and vectors.VERSION in migrations.applied(conn)
                indexes = conn.execute(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'entries' "
                    "AND schemaname = current_schema()"
                ).fetchall()
            assert store.pgvector.hnsw == vectors.has_hnsw(store.pgvector.version)
            assert any("hnsw" in row[0] for row in indexes) == store.pgvector.hnsw
            shown = get_entry(store, hit.entry_id)  # `semcache show`: no copy of the vector
            assert "embedding_vector" not in shown and shown["embedding"]["dimension"] == 64
        hit = local.lookup(user("WRITTEN AFTER"), Answer, model="m")  # local search still works
        assert hit is not None and hit.value.text == "b"


def test_a_server_without_pgvector_refuses_it_and_keeps_its_schema(pg_dsn: str) -> None:
    embedder = HashEmbedder()
    with pytest.raises(UsageError, match="pgvector extension"):
        SemanticCache(pg_dsn, embedder=embedder, search="pgvector")
    with SemanticCache(pg_dsn, embedder=embedder) as cache:  # the default needs none of it
        cache.store(user("Hello"), Answer, Answer(text="hi"), model="m")
        assert cache.lookup(user("hello"), Answer, model="m") is not None
        with cache.pipeline.store.reading() as conn:  # type: ignore[attr-defined]
            assert vectors.VERSION not in migrations.applied(conn)
    with pytest.raises(UsageError, match="postgresql://"):
        SemanticCache(":memory:", embedder=embedder, search="pgvector")


def _entry(key: str, scope: str, vector: np.ndarray) -> NewEntry:
    return NewEntry(
        exact_key=key, scope=scope, namespace="default", model="m", schema_name="Answer",
        prompt=key, request_json="{}", response_json='{"text": "x"}', raw_json=None,
        usage_json=None, total_tokens=0, embedding=vector,
    )  # fmt: skip
