"""The Store protocol, the same on both engines: SQLite files and PostgreSQL databases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from semcache import ConfigMismatchError
from semcache.storage import NewEntry, SQLiteStore, Store, open_location

from .pgserver import dsn_for, private_schema, require_server

DIM = 8


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite = SQLiteStore(tmp_path / "cache.db")
        yield sqlite
        sqlite.close()
        return
    require_server()
    with private_schema() as schema:
        pg = open_location(dsn_for(schema))
        yield pg
        pg.close()


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def entry(
    key: str, scope: str = "s", *, seed: int = 0, expires_at: float | None = None
) -> NewEntry:
    return NewEntry(
        exact_key=key, scope=scope, namespace="default", model="m", schema_name="A",
        prompt=f"prompt {key}", request_json="{}", response_json=f'{{"text":"{key}"}}',
        raw_json=None, usage_json=None, total_tokens=3, embedding=vec(seed),
        expires_at=expires_at,
    )  # fmt: skip


def test_entries_round_trip_and_a_replacement_gets_a_new_id(store: Store) -> None:
    now = time.time()
    first, replaced = store.put(entry("k1", seed=1))
    assert replaced is None
    got = store.get_exact("k1", now)
    assert got is not None and got.id == first and got.prompt == "prompt k1"
    assert got.response_json == '{"text":"k1"}' and got.total_tokens == 3
    second, replaced = store.put(entry("k1", seed=2))
    assert replaced == first and second > first
    rows = store.get_many([first, second], now)
    assert list(rows) == [second]
    assert rows[second].embedding == vec(2).astype("<f4").tobytes()
    assert store.count() == 1


def test_expired_entries_are_never_returned_and_are_evicted(store: Store) -> None:
    now = time.time()
    live, _ = store.put(entry("live", seed=1))
    dead, _ = store.put(entry("dead", seed=2, expires_at=now - 1))
    assert store.get_exact("dead", now) is None
    assert set(store.get_many([live, dead], now)) == {live}
    assert store.evict_expired(now) == [(dead, "s")]
    assert store.count() == 1


def test_put_many_keeps_the_later_of_two_equal_keys(store: Store) -> None:
    written = store.put_many([entry("a", seed=1), entry("b", seed=2), entry("a", seed=3)])
    assert written[0][1] is None and written[2][1] == written[0][0]
    assert store.count() == 2


def test_changes_catch_an_index_up_with_every_entry_of_a_scope(store: Store) -> None:
    ids = [store.put(entry(f"k{i}", "s", seed=i))[0] for i in range(3)]
    store.put(entry("other", "t", seed=9))
    full = store.changes("s", 0, DIM)
    assert sorted(full.ids.tolist()) == ids
    assert np.allclose(full.vectors[list(full.ids).index(ids[0])], vec(0))
    cursor = full.cursor if full.cursor is not None else int(full.ids.max())
    newer, _ = store.put(entry("k9", "s", seed=10))
    step = store.changes("s", cursor, DIM)
    assert step.ids.tolist() == [newer]


def test_lru_eviction_keeps_the_recently_hit(store: Store) -> None:
    ids = [store.put(entry(f"k{i}", seed=i))[0] for i in range(4)]
    store.record({ids[0]: (1, time.time() + 10)}, {})
    gone = store.evict_lru(2)
    assert sorted(i for i, _ in gone) == [ids[1], ids[2]]
    assert store.count() == 2
    assert store.evict_lru(2) == []


def test_bookkeeping_counters_thresholds_feedback_audit_shadow(store: Store) -> None:
    entry_id, _ = store.put(entry("k", seed=1))
    now = time.time()
    audit = (now - 100, "default", "s", "q", entry_id, "p", 0.9, "hit", "", 1.5)
    veto = (now, "s", entry_id, "q", "p", 0.9, "rules", "differs")
    store.record(
        {entry_id: (2, now)},
        {"misses": 3, "exact_hits": 1},
        {"audit": [audit] * 3, "vetoes": [veto]},
    )
    store.record({}, {"misses": 1})
    assert store.counters() == {"misses": 4, "exact_hits": 1}
    assert store.trim_audit(older_than=None, max_rows=1) == 2
    assert store.trim_audit(older_than=now, max_rows=None) == 1
    store.set_threshold("scope:s", 0.91, "user")
    store.set_threshold("default", 0.8, "user")
    store.set_threshold("default", None, "user")
    assert store.thresholds() == {"scope:s": pytest.approx(0.91)}
    store.add_feedback(entry_id, "s", "q", "p", 0.9, vec(5), "wrong")
    store.add_feedback(entry_id, "s", "q", "p", None, None, "exact")
    wrong = store.wrong_queries([entry_id, 999], DIM)
    assert list(wrong) == [entry_id] and np.allclose(wrong[entry_id][0], vec(5))
    store.add_feedback(entry_id, "s", "q2", "p", 0.91, vec(6), "wrong")
    other, _ = store.put(entry("k2", seed=2))
    # What a semantic lookup reads (one round trip on a server): the live rows among the ids and
    # the wrong-marked queries of those rows only.
    rows, wrong = store.candidates([entry_id, other, 999], now, DIM)
    assert sorted(rows) == sorted([entry_id, other]) and list(wrong) == [entry_id]
    assert rows[entry_id] == store.get_many([entry_id], now)[entry_id]
    assert np.allclose(wrong[entry_id], np.vstack([vec(5), vec(6)]))
    assert store.candidates([], now, DIM) == ({}, {})
    store.add_shadow("s", entry_id, 0.93, True, [])
    store.add_shadow("s", entry_id, 0.95, False, ["text"])
    assert store.shadow_counts() == {"s": (2, 1, pytest.approx(0.95))}


def test_settings_are_recorded_once_and_a_mismatch_is_refused(store: Store) -> None:
    store.check_settings({"embedder_name": "a"})
    store.check_settings({"embedder_name": "a"})
    assert store.settings()["embedder_name"] == "a" and store.settings()["database_id"]
    with pytest.raises(ConfigMismatchError, match="embedder_name"):
        store.check_settings({"embedder_name": "b"})
    assert store.outages() == 0
