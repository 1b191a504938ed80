"""SemanticCache on the application's psycopg pool: borrowed connections, the owner's pool left as
it was, the same time budget, outages and redaction as with a URL.

Every pool here is a real ``psycopg_pool.ConnectionPool`` on the test server (one private schema
per test); the link is cut with the relay of ``tests/tcpproxy.py``. No assertion is about time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import instructor
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from semcache import SemanticCache, UsageError, cache_hit
from semcache.errors import StoreUnavailableError
from semcache.integrations.instructor_cache import SQLiteCache

from .conftest import FakeProvider, openai_client
from .fleet_node import Answer, paraphrase, question
from .pgserver import (
    SERVER,
    HashEmbedder,
    admin,
    dsn_for,
    eventually,
    private_schema,
    require_server,
)
from .tcpproxy import Relay

DEAD = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def schema_of(dsn: str) -> str:
    return dsn.split("%3D")[1].split("&")[0]


def open_cache(pool: Any, **options: Any) -> SemanticCache:
    return SemanticCache(pool, embedder=HashEmbedder(), verifier=None, threshold=0.9, **options)


@pytest.fixture
def pool(pg_dsn: str) -> Iterator[ConnectionPool[Any]]:
    """A pool of exactly one connection whose owner wants dicts as rows and no autocommit, with
    README's client-side socket timeout (which the change listener's connection takes too)."""
    kwargs = {"row_factory": dict_row, "tcp_user_timeout": 6000}
    with ConnectionPool(pg_dsn, min_size=1, max_size=1, kwargs=kwargs, open=True) as opened:
        opened.wait()
        yield opened


def test_a_cache_on_a_pool_stores_and_hits_both_tiers(pool: ConnectionPool[Any]) -> None:
    provider = FakeProvider()
    with open_cache(pool) as cache:
        client = cache.wrap(instructor.from_openai(openai_client(provider)))
        first = client.create(model="m", response_model=Answer, messages=question(1))
        again = client.create(model="m", response_model=Answer, messages=question(1))
        near = client.create(model="m", response_model=Answer, messages=paraphrase(1))
        assert provider.count == 1 and first.text == near.text == "Fleet item 1?"
        assert cache_hit(again) is not None and cache_hit(again).tier == "exact"  # type: ignore[union-attr]
        assert cache_hit(near) is not None and cache_hit(near).tier == "semantic"  # type: ignore[union-attr]
        stats = cache.stats()
        assert (stats.entries, stats.exact_hits, stats.semantic_hits, stats.misses) == (1, 1, 1, 1)
        assert stats.store_outages == 0 and pool.get_stats()["requests_num"] > 0


def test_two_caches_share_a_pool_of_one_and_the_listener_takes_no_slot(
    pg_dsn: str, pool: ConnectionPool[Any]
) -> None:
    with open_cache(pool) as a, open_cache(pool) as b:
        a.store(question(2), Answer, Answer(text="two"), model="m")
        hit = b.lookup(paraphrase(2), Answer, model="m")
        assert hit is not None and hit.value.text == "two" and hit.tier == "semantic"
        store: Any = b.pipeline.store
        eventually(store.listener.listening, "b's change listener connected")
        b_listener = store.listener.backend_pid
        with admin() as conn:
            (appname,) = conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (b_listener,)
            ).fetchone()
        assert appname == schema_of(pg_dsn)  # opened from the pool's conninfo
        assert pool.get_stats()["pool_size"] == 1  # the owner's size: never grown for the cache


def test_close_leaves_the_pool_open_with_the_owners_settings(
    pg_dsn: str, pool: ConnectionPool[Any]
) -> None:
    with pool.connection() as conn:
        before = conn.execute("SHOW statement_timeout").fetchone()
    with open_cache(pool, busy_timeout=0.5) as cache:
        cache.store(question(3), Answer, Answer(text="three"), model="m")
        assert cache.lookup(question(3), Answer, model="m") is not None
    cache.close()  # idempotent, and still not the pool's
    assert not pool.closed
    with pool.connection() as conn:  # the same single connection the cache borrowed
        assert conn.autocommit is False and conn.row_factory is dict_row
        assert conn.execute("SHOW statement_timeout").fetchone() == before
        assert conn.execute("SELECT count(*) AS n FROM entries").fetchone() == {"n": 1}


def test_the_statement_timeout_applies_on_borrowed_connections(
    pg_dsn: str, pool: ConnectionPool[Any]
) -> None:
    """The cache's busy_timeout holds on the owner's connection while the cache has it, and a
    table locked by another session makes a lookup a miss instead of a wait."""
    with open_cache(pool, busy_timeout=0.5) as cache:
        store: Any = cache.pipeline.store
        with store.reading() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "500ms"
        cache.store(question(4), Answer, Answer(text="four"), model="m")
        with admin() as conn, conn.transaction():
            conn.execute(f"LOCK TABLE {schema_of(pg_dsn)}.entries IN ACCESS EXCLUSIVE MODE")
            assert cache.lookup(question(4), Answer, model="m") is None
            assert store.timeouts() >= 1
        assert cache.lookup(question(4), Answer, model="m") is not None
        assert cache.stats().store_outages == 0


def test_nested_store_calls_share_the_borrowed_connection(pool: ConnectionPool[Any]) -> None:
    """A pool of one: a second borrow inside the first would wait for itself, and would not see
    the outer transaction's rows."""
    with open_cache(pool) as cache:
        store: Any = cache.pipeline.store
        with store.transaction():
            store.set_threshold("scope-x", 0.95, "test")  # a savepoint of the outer transaction
            assert store.thresholds() == {"scope-x": 0.95}
        assert store.thresholds() == {"scope-x": 0.95} and store.outages() == 0


@pytest.fixture
def relayed_pool() -> Iterator[tuple[Relay, ConnectionPool[Any]]]:
    """A pool whose connections go through a relay to the test server."""
    require_server()
    relay = Relay(("127.0.0.1", 5432))
    with private_schema() as schema:
        through = SERVER.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
        with ConnectionPool(dsn_for(schema, through), min_size=2, open=True) as opened:
            opened.wait()
            yield relay, opened
        relay.cut()


def test_an_outage_of_a_pools_server_is_a_miss_logged_once_and_recovered_from(
    relayed_pool: tuple[Relay, ConnectionPool[Any]], caplog: pytest.LogCaptureFixture
) -> None:
    relay, pool = relayed_pool
    caplog.set_level(logging.WARNING, logger="semcache")
    provider = FakeProvider()
    with open_cache(pool) as cache:
        client = cache.wrap(instructor.from_openai(openai_client(provider)))
        client.create(model="m", response_model=Answer, messages=question(1))
        relay.cut()  # the pooled connections die, and new ones are refused
        answers = [
            client.create(model="m", response_model=Answer, messages=question(i % 3))
            for i in range(6)
        ]
        assert [a.text for a in answers] == [f"Fleet item {i % 3}?" for i in range(6)]
        assert provider.count == 7  # every call reached the provider, none raised
        assert cache.lookup(paraphrase(1), Answer, model="m") is None
        ours = [r.getMessage() for r in caplog.records if r.name == "semcache"]
        assert len(ours) == 1 and "is unreachable; lookups are misses" in ours[0]
        relay.restore()
        eventually(
            lambda: cache.lookup(question(1), Answer, model="m") is not None,
            "a hit once the server answers again (dead pooled connections replaced)",
        )
        assert cache.stats().store_outages == 1
        assert not pool.closed


def test_a_pool_at_a_dead_port_is_an_error_at_open_or_with_fail_open_a_disabled_cache() -> None:
    with ConnectionPool(DEAD, min_size=1, open=True) as dead:
        with pytest.raises(StoreUnavailableError, match="no connection from the pool"):
            open_cache(dead)
        provider = FakeProvider()
        with open_cache(dead, fail_open=True) as cache:
            assert cache.disabled
            client = cache.wrap(instructor.from_openai(openai_client(provider)))
            assert client.create(model="m", response_model=Answer, messages=question(1)).text
            assert provider.count == 1


def test_the_password_in_a_pools_conninfo_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    require_server()
    secret, other = "pw-Pool-5150", "pw-Kwargs-8086"
    caplog.set_level(logging.DEBUG)  # every logger, psycopg's and the pool's included
    seen: list[str] = []
    with private_schema() as schema:
        dsn = dsn_for(schema, password=secret)  # trust auth ignores it; libpq still sends it
        with ConnectionPool(dsn, min_size=1, open=True) as pool, open_cache(pool) as cache:
            cache.store(question(1), Answer, Answer(text="one"), model="m")
            assert cache.lookup(paraphrase(1), Answer, model="m") is not None
            seen += [repr(cache.pipeline.store), str(cache.stats()), repr(cache.settings)]
            with pytest.raises(UsageError) as caught:
                _ = cache.db
            seen.append(str(caught.value))
    dead_url = DEAD.replace("postgres@", f"postgres:{secret}@")
    for conninfo, kwargs in ((dead_url, {}), (DEAD, {"password": other})):
        with ConnectionPool(conninfo, kwargs=kwargs, min_size=1, open=True) as dead:
            with pytest.raises(StoreUnavailableError) as failed:
                open_cache(dead)
            error: BaseException | None = failed.value
            while error is not None:
                seen.append(f"{error!r} {error}")
                error = error.__cause__ or error.__context__
            with open_cache(dead, fail_open=True) as disabled:
                seen += [str(disabled.disabled), repr(disabled.pipeline.store)]
    seen += [record.getMessage() for record in caplog.records]
    assert "***" in " ".join(seen)
    assert not [text for text in seen if secret in text or other in text]


def test_an_async_or_closed_pool_is_refused_saying_what_to_pass(pg_dsn: str) -> None:
    async_pool = AsyncConnectionPool(pg_dsn, open=False)
    with pytest.raises(UsageError, match=r"conninfo URL \(SemanticCache\(pool.conninfo\)\)"):
        open_cache(async_pool)
    with pytest.raises(UsageError, match="AsyncConnectionPool"):
        SQLiteCache(async_pool)
    with pytest.raises(UsageError, match="not open"):
        open_cache(ConnectionPool(pg_dsn, open=False))
    with open_cache(pg_dsn) as cache:  # what the message says to pass works
        assert cache.lookup(question(1), Answer, model="m") is None


def test_pgvector_search_on_a_pool_is_refused_saying_what_to_pass(
    pool: ConnectionPool[Any],
) -> None:
    """The search setting pgvector needs is set on the cache's own sessions; a pool's are its
    owner's, so the option takes the URL."""
    with pytest.raises(UsageError, match="takes a postgresql:// URL, not a pool"):
        SemanticCache(pool, search="pgvector")


def test_instructors_cache_adapter_on_a_pool(pool: ConnectionPool[Any]) -> None:
    provider = FakeProvider()
    with SQLiteCache(pool) as one, SQLiteCache(pool) as two:
        first = instructor.from_openai(openai_client(provider), cache=one)
        second = instructor.from_openai(openai_client(provider), cache=two)
        for client in (first, second):
            answer = client.create(
                model="m", response_model=Answer, messages=question(9), cache_namespace="users"
            )
            assert answer.text == "Fleet item 9?"
        assert provider.count == 1  # the second adapter found the first one's row
    assert not pool.closed
