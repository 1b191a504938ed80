"""Catch-ups of one scope: one at a time, shared by lookups that waited, bounded when the store
is unavailable (threads queued on a slow database must not each wait out its timeout)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from semcache.errors import StoreUnavailableError
from semcache.scopes import Scopes
from semcache.storage import Changes, SQLiteStore

from .pgserver import HashEmbedder


class CountingLock:
    """A lock that counts the threads that asked for it (each had noted its arrival before)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counting = threading.Lock()
        self.asked = 0

    def __enter__(self) -> None:
        with self._counting:
            self.asked += 1
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class GatedStore(SQLiteStore):
    """A store whose ``changes`` waits for a gate, counts its calls and may fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.calls = 0
        self.fail = False

    def changes(self, scope: str, cursor: int, dimension: int) -> Changes:
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(30)
        if self.fail:
            raise StoreUnavailableError("down")
        return super().changes(scope, cursor, dimension)


@pytest.mark.parametrize("fail", [False, True])
def test_a_lookup_that_waited_for_a_catch_up_uses_its_outcome(tmp_path: Path, fail: bool) -> None:
    store = GatedStore(tmp_path / "cache.db")
    scopes = Scopes(store, "float32")
    embedder = HashEmbedder()
    store.gate.set()
    scopes.catch_up("s", embedder)  # creates the index
    store.gate.clear()
    store.entered.clear()
    store.calls, store.fail = 0, fail
    lock = CountingLock()
    scopes._catch_ups["s"].lock = lock  # type: ignore[assignment]
    outcomes: list[Any] = []

    def lookup() -> None:
        try:
            outcomes.append(scopes.catch_up("s", embedder))
        except StoreUnavailableError as exc:
            outcomes.append(exc)

    first = threading.Thread(target=lookup)
    first.start()
    assert store.entered.wait(30)  # the first catch-up is asking the store
    waiting = [threading.Thread(target=lookup) for _ in range(3)]
    for thread in waiting:
        thread.start()
    while lock.asked < 4:  # all three have arrived and wait for the first catch-up
        threading.Event().wait(0.01)
    store.gate.set()
    for thread in [first, *waiting]:
        thread.join(30)
    # The three that arrived during the first catch-up were not answered by it (it began before
    # they arrived): one of them asks the store again, and the other two share its outcome.
    assert store.calls == 2
    assert len(outcomes) == 4
    if fail:
        assert all(isinstance(o, StoreUnavailableError) for o in outcomes)
    else:
        assert all(o is scopes.index for o in outcomes)
    store.close()


def test_a_caught_up_index_holds_what_the_store_holds(tmp_path: Path) -> None:
    store = GatedStore(tmp_path / "cache.db")
    store.gate.set()
    scopes = Scopes(store, "float32")
    index = scopes.catch_up("s", HashEmbedder())
    assert index.search("s", np.ones(64, np.float32) / 8, 1) == []
    store.close()


def test_no_lookup_waits_for_a_large_scope_to_be_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scope's first index of HNSW size is built in the background: meanwhile its semantic
    lookups miss at once (its exact tier answers), other scopes are searched as usual, and once
    built the scope serves semantic hits."""
    from pydantic import BaseModel

    from semcache import SemanticCache
    from semcache.index import vector_index

    class Answer(BaseModel):
        text: str

    def ask(item: int, tail: str = "?") -> list[dict[str, str]]:
        return [{"role": "user", "content": f"Item {item}{tail}"}]

    monkeypatch.setattr(vector_index, "HNSW_AT", 50)
    gate, building = threading.Event(), threading.Event()
    real = vector_index.VectorIndex._to_hnsw

    def held(self: Any, *args: Any) -> None:
        building.set()
        assert gate.wait(60)
        real(self, *args)

    monkeypatch.setattr(vector_index.VectorIndex, "_to_hnsw", held)
    path = tmp_path / "cache.db"
    with SemanticCache(path, embedder=HashEmbedder(), verifier=None, threshold=0.9) as writer:
        writer.store_many([(ask(i), Answer(text=str(i))) for i in range(80)], Answer, model="big")
        writer.store(ask(1), Answer, Answer(text="small"), model="small")
    with SemanticCache(path, embedder=HashEmbedder(), verifier=None, threshold=0.9) as cache:
        assert cache.lookup(ask(3, ""), Answer, model="big") is None  # not built yet: a miss
        assert building.wait(60)
        exact = cache.lookup(ask(3), Answer, model="big")
        assert exact is not None and exact.tier == "exact"
        small = cache.lookup(ask(1, ""), Answer, model="small")
        assert small is not None and small.tier == "semantic"  # another scope is not held up
        gate.set()
        scopes = cache.pipeline.scopes
        assert scopes.wait(exact.scope, timeout=120) and not scopes.building
        hit = cache.lookup(ask(3, ""), Answer, model="big")
        assert hit is not None and hit.tier == "semantic" and hit.value.text == "3"
        assert scopes.index is not None and scopes.index.kind(hit.scope) == "hnsw"
