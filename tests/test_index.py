"""The per-scope FAISS index: exact vs HNSW, tombstones, saved files and their damage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from semcache import SemanticCache
from semcache import index as index_module
from semcache.index import VectorIndex

DIM = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters, shaped like sentence embeddings rather than uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 1), DIM))
    x = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def filled(n: int, folder: Path | None = None, owner: str = "db") -> VectorIndex:
    index = VectorIndex(DIM, folder, owner)
    index.add("s", np.arange(1, n + 1), clustered(n))
    return index


def test_search_is_scoped_and_ordered() -> None:
    index = filled(100)
    index.add("other", np.array([1000]), clustered(1, seed=5))
    query = clustered(100)[7]
    found = index.search("s", query, 4)
    assert found[0][0] == 8 and found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert all(i != 1000 for i, _ in index.search("s", clustered(1, seed=5)[0], 100))
    assert index.search("missing", query, 4) == []


def test_catch_up_adds_each_id_once() -> None:
    index = filled(10)
    index.add("s", np.arange(5, 15), clustered(10, seed=1))
    assert index.size("s") == 14 and index.watermark("s") == 14


def test_large_scopes_switch_to_hnsw_with_high_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "HNSW_AT", 3000)
    vectors = clustered(5000, seed=2)
    index = VectorIndex(DIM)
    index.add("s", np.arange(1, 2001), vectors[:2000])
    assert index.kind("s") == "flat"
    index.add("s", np.arange(2001, 5001), vectors[2000:])
    assert index.kind("s") == "hnsw" and index.size("s") == 5000
    queries = clustered(300, seed=3)
    exact = vectors @ queries.T
    truth = exact.argmax(axis=0) + 1
    got = [index.search("s", q, 1)[0][0] for q in queries]
    recall = float(np.mean(np.array(got) == truth))
    assert recall >= 0.99, recall


def test_hnsw_deletions_are_tombstoned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "HNSW_AT", 100)
    index = filled(500)
    assert index.kind("s") == "hnsw"
    query = clustered(500)[41]
    assert index.search("s", query, 1)[0][0] == 42
    assert index.remove("s", [42]) is False
    assert all(i != 42 for i, _ in index.search("s", query, 4))
    assert len(index.search("s", query, 4)) == 4
    assert index.remove("s", list(range(1, 60))) is True  # over a tenth: rebuild advised


def test_saved_index_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "PERSIST_AT", 100)
    index = filled(300, tmp_path)
    assert index.save() == 1 and index.save() == 0  # nothing new: not written again
    again = VectorIndex(DIM, tmp_path, "db")
    assert again.load("s") and again.watermark("s") == 300 and again.size("s") == 300
    query = clustered(300)[9]
    assert again.search("s", query, 3) == index.search("s", query, 3)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "other-database"])
def test_damaged_saved_index_is_refused_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    monkeypatch.setattr(index_module, "PERSIST_AT", 100)
    filled(300, tmp_path).save()
    path = tmp_path / "s.faiss"
    data = path.read_bytes()
    owner = "db"
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    else:
        owner = "another-db"
    with caplog.at_level(logging.WARNING, logger="semcache"):
        again = VectorIndex(DIM, tmp_path, owner)
        assert again.load("s") is False and again.load("s") is False
    assert caplog.text.count("damaged") == 1
    assert not again.has("s")


class Answer(BaseModel):
    text: str


def test_cache_saves_large_scopes_and_reopens_from_the_file(
    tmp_path: Path, embedder: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(index_module, "PERSIST_AT", 20)
    db = tmp_path / "c.db"
    texts = [f"Where is parcel {i} for customer {i * 13}?" for i in range(25)]
    with SemanticCache(db, embedder=embedder, verifier=None, threshold=0.8) as cache:
        for t in texts:
            cache.store([{"role": "user", "content": t}], Answer, Answer(text=t))
        assert cache.lookup(
            [{"role": "user", "content": "where is parcel 3 for customer 39"}], Answer
        )
    saved = list((tmp_path / "c.db.index").glob("*.faiss"))
    assert len(saved) == 1
    with SemanticCache(db, embedder=embedder, verifier=None, threshold=0.8) as cache:
        cache.store([{"role": "user", "content": "A new question"}], Answer, Answer(text="new"))
        hit = cache.lookup(
            [{"role": "user", "content": "where is parcel 3 for customer 39"}], Answer
        )
        assert hit is not None and hit.value.text == texts[3]
        assert cache.lookup([{"role": "user", "content": "a new question"}], Answer) is not None
        assert cache._index is not None and cache._index.size(hit.scope) == 26


def test_a_stale_index_cannot_serve_a_wrong_answer(tmp_path: Path, embedder: Any) -> None:
    """An index file from an earlier database at the same path is refused, and even an index
    that proposes a wrong candidate is overruled by the store's own vectors."""
    db = tmp_path / "c.db"
    with SemanticCache(db, embedder=embedder, verifier=None, threshold=0.8) as cache:
        cache.store([{"role": "user", "content": "Cancel my order"}], Answer, Answer(text="cancel"))
        scope_hit = cache.lookup([{"role": "user", "content": "Cancel my order"}], Answer)
        assert scope_hit is not None
        index = cache._catch_up(scope_hit.scope)
        # Simulate an index whose id 1 holds another text's vector.
        index.drop(scope_hit.scope)
        wrong = embedder.embed(["What is the weather in Paris?"])
        index.add(scope_hit.scope, np.array([1]), wrong)
        probe = cache.lookup([{"role": "user", "content": "weather in Paris today?"}], Answer)
        assert probe is None  # the store's vector for entry 1 is far from the query
