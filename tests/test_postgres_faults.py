"""Faults never reach the caller: a lost or slow PostgreSQL server turns calls into misses.

The link is cut with a relay (``tests/tcpproxy.py``), never by stopping the shared server. No
assertion is about time: waits poll for an outcome, with a generous deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import instructor
import pytest

from semcache import SemanticCache

from .conftest import FakeProvider, openai_client
from .fleet_node import Answer, paraphrase, question
from .pgserver import SERVER, HashEmbedder, admin, dsn_for, private_schema, require_server
from .tcpproxy import Relay


@pytest.fixture
def relayed() -> Iterator[tuple[Relay, str, str]]:
    """A relay to the test server, and a private schema's URL through it and direct."""
    require_server()
    relay = Relay(("127.0.0.1", 5432))
    with private_schema() as schema:
        through = SERVER.replace("127.0.0.1:5432", f"127.0.0.1:{relay.port}")
        yield relay, dsn_for(schema, through), dsn_for(schema)
    relay.cut()


def messages_logged(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(text in record.getMessage() for record in caplog.records)


def test_an_outage_is_a_miss_logged_once_counted_and_recovered_from(
    relayed: tuple[Relay, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    relay, dsn, _ = relayed
    caplog.set_level(logging.DEBUG, logger="semcache")
    provider = FakeProvider()
    with SemanticCache(dsn, embedder=HashEmbedder(), verifier=None, threshold=0.9) as cache:
        client = cache.wrap(instructor.from_openai(openai_client(provider)))
        client.create(model="m", response_model=Answer, messages=question(1))
        client.create(model="m", response_model=Answer, messages=question(1))
        assert provider.count == 1
        relay.cut()
        answers = [
            client.create(model="m", response_model=Answer, messages=question(i % 3))
            for i in range(12)
        ]
        assert [a.text for a in answers] == [f"Fleet item {i % 3}?" for i in range(12)]
        assert provider.count == 13  # every call reached the provider, none raised
        assert cache.lookup(paraphrase(1), Answer, model="m") is None
        assert cache.store(question(7), Answer, Answer(text="x"), model="m") is None
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "is unreachable; lookups are misses" in warnings[0]
        relay.restore()
        deadline = time.monotonic() + 60
        hit = None
        while hit is None and time.monotonic() < deadline:
            hit = cache.lookup(question(1), Answer, model="m")
            time.sleep(0.05)
        assert hit is not None and hit.value.text == "Fleet item 1?"
        assert messages_logged(caplog, "answers again after") == 1
        stats = cache.stats()
        assert stats.store_outages == 1 and stats.exact_hits >= 2


def test_a_server_down_at_start_is_an_error_or_with_fail_open_a_disabled_cache(
    relayed: tuple[Relay, str, str],
) -> None:
    relay, dsn, _ = relayed
    relay.cut()
    with pytest.raises(ConnectionError):
        SemanticCache(dsn, embedder=HashEmbedder())
    provider = FakeProvider()
    with SemanticCache(dsn, embedder=HashEmbedder(), fail_open=True) as cache:
        assert cache.disabled
        client = cache.wrap(instructor.from_openai(openai_client(provider)))
        assert client.create(model="m", response_model=Answer, messages=question(1)).text
        assert provider.count == 1


def test_a_slow_database_is_bounded_by_the_statement_timeout(pg_dsn: str) -> None:
    """A table locked by another session: the lookup gives up after busy_timeout, as a miss."""
    schema = pg_dsn.split("%3D")[1].split("&")[0]
    with SemanticCache(pg_dsn, embedder=HashEmbedder(), busy_timeout=0.5) as cache:
        cache.store(question(1), Answer, Answer(text="answer 1"), model="m")
        store: Any = cache.pipeline.store
        with admin() as conn, conn.transaction():
            conn.execute(f"LOCK TABLE {schema}.entries IN ACCESS EXCLUSIVE MODE")
            assert cache.lookup(question(1), Answer, model="m") is None
            assert store.timeouts() >= 1
        assert cache.lookup(question(1), Answer, model="m") is not None
        assert cache.stats().store_outages == 0


def test_a_thread_that_ends_closes_its_connection(pg_dsn: str) -> None:
    """One connection per thread that used the cache, not one per thread that ever did."""
    import threading

    schema = pg_dsn.split("%3D")[1].split("&")[0]
    with SemanticCache(pg_dsn, embedder=HashEmbedder()) as cache:
        cache.store(question(1), Answer, Answer(text="answer 1"), model="m")
        for _ in range(5):
            worker = threading.Thread(
                target=cache.lookup, args=(question(1), Answer), kwargs={"model": "m"}
            )
            worker.start()
            worker.join()
        with admin() as conn:
            deadline = time.monotonic() + 60
            while True:
                (open_now,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (schema,)
                ).fetchone()
                if open_now <= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert open_now == 1  # this thread's
