"""``SemanticCache.store_many``: bulk loading with batched embedding and one transaction per batch.

What matters: every stored item is found afterwards by both tiers exactly as if it had been stored
with ``store``; ids come back in item order; a batch is all or nothing; a bad item is refused before
its batch writes anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from semcache import SemanticCache
from semcache.embedding import SentenceTransformerEmbedder
from semcache.errors import LockTimeoutError, UsageError

MODEL = "gpt-4o-mini"
SYSTEM = {"role": "system", "content": "Extract the city the user asks about."}
CITIES = ["Paris", "Rome", "Lisbon", "Vienna", "Oslo", "Prague", "Dublin", "Athens"]


class City(BaseModel):
    name: str


class Other(BaseModel):
    label: str


def messages(text: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": text}]


def items() -> list[tuple[list[dict[str, str]], City]]:
    return [(messages(f"What is the weather like in {c} today?"), City(name=c)) for c in CITIES]


class CountingEmbedder:
    """The real bundled embedder, counting how many ``embed`` calls reach it."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.calls: list[int] = []

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.embed(texts)

    def fits(self, text: str) -> bool:
        return self.inner.fits(text)


def test_every_item_is_found_by_both_tiers(cache: SemanticCache) -> None:
    ids = cache.store_many(items(), City, model=MODEL)
    assert len(ids) == len(CITIES) and all(isinstance(i, int) for i in ids)
    assert ids == sorted(ids)
    for city in CITIES:
        exact = cache.lookup(
            messages(f"What is the weather like in {city} today?"), City, model=MODEL
        )
        assert exact is not None and exact.tier == "exact" and exact.value.name == city
        near = cache.lookup(messages(f"what's the weather like in {city} today"), City, model=MODEL)
        assert near is not None and near.tier == "semantic" and near.value.name == city
    assert len(cache) == len(CITIES)


def test_batched_vectors_match_one_by_one(tmp_path: Path, embedder: Any) -> None:
    with SemanticCache(tmp_path / "one.db", embedder=embedder) as one:
        for msgs, value in items():
            one.store(msgs, City, value, model=MODEL)
        singles = dict(one.db.connection().execute("SELECT prompt, embedding FROM entries"))
    with SemanticCache(tmp_path / "many.db", embedder=embedder) as many:
        many.store_many(items(), City, model=MODEL, batch_size=3)
        batched = dict(many.db.connection().execute("SELECT prompt, embedding FROM entries"))
    assert singles.keys() == batched.keys()
    for prompt, blob in singles.items():
        a, b = np.frombuffer(blob, "<f4"), np.frombuffer(batched[prompt], "<f4")
        assert float(a @ b) > 0.9999


def test_one_embedding_call_and_one_write_per_batch(tmp_path: Path, embedder: Any) -> None:
    counting = CountingEmbedder(embedder)
    with SemanticCache(tmp_path / "c.db", embedder=counting) as cache:
        ids = cache.store_many(items(), City, model=MODEL, batch_size=3)
    assert counting.calls == [3, 3, 2]
    assert len(set(ids)) == len(CITIES)


def test_ids_in_item_order_with_none_for_uncacheable(cache: SemanticCache) -> None:
    batch: list[Any] = items()[:2]
    batch.insert(1, ("not a message list", City(name="Nowhere")))
    batch.append((messages("Where is Bern? \ud800"), City(name="Bern")))  # lone surrogate
    ids = cache.store_many(batch, City, model=MODEL)
    assert ids[1] is None and ids[3] is None
    assert isinstance(ids[0], int) and isinstance(ids[2], int) and ids[0] < ids[2]
    hit = cache.lookup(batch[2][0], City, model=MODEL)
    assert hit is not None and hit.entry_id == ids[2] and hit.value.name == "Rome"


def test_same_request_twice_keeps_the_later_answer(cache: SemanticCache) -> None:
    ask = messages("What is the weather like in Paris today?")
    ids = cache.store_many([(ask, City(name="Paris")), (ask, City(name="Paris, France"))], City)
    assert ids[0] != ids[1]
    hit = cache.lookup(ask, City)
    assert hit is not None and hit.entry_id == ids[1] and hit.value.name == "Paris, France"
    assert len(cache) == 1


def test_completion_and_tokens_are_kept(cache: SemanticCache) -> None:
    completion = {"id": "chatcmpl-1", "usage": {"total_tokens": 42, "prompt_tokens": 30}}
    ask = messages("What is the weather like in Oslo today?")
    cache.store_many([(ask, City(name="Oslo"), completion)], City, model=MODEL)
    hit = cache.lookup(ask, City, model=MODEL)
    assert hit is not None and hit.tokens == 42
    assert hit.completion.usage.total_tokens == 42


def test_wrong_value_type_writes_nothing_of_its_batch(cache: SemanticCache) -> None:
    batch: list[Any] = [*items()[:3], (messages("Label this."), Other(label="x"))]
    with pytest.raises(UsageError, match="not a City"):
        cache.store_many(batch, City, model=MODEL, batch_size=10)
    assert len(cache) == 0


def test_a_failed_batch_writes_nothing_and_earlier_batches_stay(
    db_path: Path, embedder: Any
) -> None:
    with SemanticCache(db_path, embedder=embedder, busy_timeout=0.2) as cache:
        first = cache.store_many(items()[:4], City, model=MODEL)
        blocker = sqlite3.connect(db_path)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the file
        try:
            with pytest.raises(LockTimeoutError):
                cache.store_many(items()[4:], City, model=MODEL)
        finally:
            blocker.rollback()
            blocker.close()
        assert len(cache) == 4
        for (msgs, value), entry_id in zip(items()[:4], first, strict=True):
            hit = cache.lookup(msgs, City, model=MODEL)
            assert hit is not None and hit.entry_id == entry_id and hit.value == value
        again = cache.store_many(items()[4:], City, model=MODEL)
        assert all(isinstance(i, int) for i in again) and len(cache) == len(CITIES)


def test_batch_size_must_be_positive(cache: SemanticCache) -> None:
    with pytest.raises(UsageError):
        cache.store_many(items(), City, batch_size=0)
