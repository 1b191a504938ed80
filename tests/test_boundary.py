"""The similarity that decides a hit is exactly the one ``CacheHit.similarity`` reports.

The FAISS index only proposes candidates; its scores may differ from the stored float32 vector's
similarity in the last bits (or more, with fp16/sq8 vectors). Before, candidates were filtered by
the index's score, so a threshold equal to a reported similarity could miss: the cause of the
flaky ``test_threshold_boundary_is_inclusive``. These tests make the index's score deliberately
lower than the true one, so they fail every time the index's score decides, not once in a while.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from semcache import SemanticCache
from semcache.index.vector_index import VectorIndex


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def pessimistic_index(monkeypatch: pytest.MonkeyPatch) -> None:
    real = VectorIndex.search

    def search(self: VectorIndex, scope: str, vector: np.ndarray, k: int) -> Any:
        return [(i, s - 1e-3) for i, s in real(self, scope, vector, k)]

    monkeypatch.setattr(VectorIndex, "search", search)


@pytest.mark.parametrize("vectors", ["float32", "fp16"])
def test_a_threshold_equal_to_the_reported_similarity_hits(
    tmp_path: Any, embedder: Any, pessimistic_index: None, vectors: Any
) -> None:
    with SemanticCache(tmp_path / "c.db", embedder=embedder, index_vectors=vectors) as cache:
        cache.store(user("How do I reset my password?"), Answer, Answer(text="stored"), model="m")
        probe = cache.lookup(user("password reset how?"), Answer, model="m", threshold=-1.0)
        assert probe is not None and probe.tier == "semantic"
        # Exactly the stored float32 vector against the query's, as one dot product.
        row = cache.db.get_many([probe.entry_id], now=0.0)[probe.entry_id]
        assert row.embedding is not None
        stored = np.frombuffer(row.embedding, dtype="<f4")
        query = embedder.embed(["password reset how?"])[0]
        assert probe.similarity == min(1.0, float(stored @ query))
        for _ in range(3):  # the same answer every time
            at = cache.lookup(
                user("password reset how?"), Answer, model="m", threshold=probe.similarity
            )
            assert at is not None and at.similarity == probe.similarity
        above = math.nextafter(probe.similarity, 2.0)
        assert cache.lookup(user("password reset how?"), Answer, model="m", threshold=above) is None
