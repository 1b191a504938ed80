"""Thresholds per scope and schema, lifetimes, the size bound and maintenance."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from semcache import SemanticCache, UsageError, lifecycle


class Answer(BaseModel):
    text: str


class Other(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_thresholds_by_scope_schema_and_file_are_persisted(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, verifier=None, threshold=0.8) as c:
        c.store(user("How do I reset my password?"), Answer, Answer(text="a"))
        c.store(user("How do I reset my password?"), Other, Other(text="b"))
        similarity = c.lookup(user("How can I reset my password?"), Answer).similarity
        c.set_threshold(min(1.0, similarity + 0.001), response_model=Answer)
        assert c.lookup(user("How can I reset my password?"), Answer) is None
        assert c.lookup(user("How can I reset my password?"), Other) is not None
        # the per-call override beats the persisted one
        assert c.lookup(user("How can I reset my password?"), Answer, threshold=0.8) is not None
    with SemanticCache(db_path, embedder=embedder, verifier=None, threshold=0.8) as again:
        assert "schema:Answer" in again.thresholds()
        assert again.lookup(user("How can I reset my password?"), Answer) is None
        hit = again.lookup(user("How can I reset my password?"), Other)
        again.set_threshold(0.999, scope=hit.scope)
        assert again.lookup(user("How can I reset my password?"), Other) is None
        again.set_threshold(None, scope=hit.scope)
        assert again.lookup(user("How can I reset my password?"), Other) is not None
        with pytest.raises(UsageError):
            again.set_threshold(2.0)


def test_expired_entries_are_never_served_and_are_reclaimed(cache: SemanticCache) -> None:
    cache.store(user("How do I reset my password?"), Answer, Answer(text="a"), ttl=1.0)
    cache.store(user("Where is my parcel?"), Answer, Answer(text="b"))
    assert cache.lookup(user("How do I reset my password?"), Answer) is not None
    time.sleep(1.1)
    assert cache.lookup(user("How do I reset my password?"), Answer) is None
    assert cache.lookup(user("How can I reset my password?"), Answer) is None
    assert cache.lookup(user("Where is my parcel?"), Answer) is not None
    cache.db.evict_expired(time.time())  # periodic maintenance may already have done it
    ids = [i for (i,) in cache.db.connection().execute("SELECT id FROM entries")]
    assert ids == [2]


def test_default_ttl_and_invalid_ttl(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, ttl=60) as c:
        c.store(user("Where is my parcel?"), Answer, Answer(text="b"))
        (expires,) = c.db.connection().execute("SELECT expires_at FROM entries").fetchone()
        assert 55 < expires - time.time() <= 60
    with pytest.raises(UsageError):
        SemanticCache(db_path, embedder=embedder, ttl=-1)


def test_size_bound_evicts_the_least_recently_used(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, max_entries=2, verifier=None) as c:
        c.store(user("How do I reset my password?"), Answer, Answer(text="a"))
        c.store(user("Where is my parcel?"), Answer, Answer(text="b"))
        assert c.lookup(user("How do I reset my password?"), Answer) is not None  # a is used
        c.store(user("Cancel my subscription"), Answer, Answer(text="c"))
        assert len(c) == 2
        assert c.lookup(user("Where is my parcel?"), Answer) is None  # b was least recent
        assert c.lookup(user("Where's my parcel"), Answer) is None  # gone from the index too
        assert c.lookup(user("How do I reset my password?"), Answer) is not None
        assert c.lookup(user("Cancel my subscription"), Answer) is not None


def test_a_periodic_job_is_due_on_its_first_call_even_just_after_boot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The monotonic clock starts near zero at boot: a job that never ran is due at once, then
    once per period (the tune period, 600 s, once made a cache started minutes after boot skip
    its first calibration)."""
    clock = [120.0]
    monkeypatch.setattr(lifecycle.time, "monotonic", lambda: clock[0])
    timers = lifecycle.Maintenance()
    assert timers.due("tune") and not timers.due("tune")
    clock[0] += 599.0
    assert not timers.due("tune")
    clock[0] += 1.0
    assert timers.due("tune") and timers.due("expire") and not timers.due("expire")
