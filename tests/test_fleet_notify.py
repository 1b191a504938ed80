"""Change notifications: a replica catches up when another node wrote, not on every lookup.

Writers ``pg_notify`` in their transaction; each cache's listener thread marks the scope, and the
next lookup reads the feed. The feed stays the truth: a notification lost while the listener was
away is made up for when it listens again, one never sent by the fallback poll. Every wait below
has a generous deadline; none measures a speed.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from typing import Any

import psycopg
import pytest

from semcache import SemanticCache
from semcache.storage.postgres.entries import insert
from semcache.storage.postgres.listen import Listener
from semcache.storage.postgres.store import PostgresStore

from . import fleet_node
from .fleet_node import Answer, open_node, paraphrase, question
from .pgserver import SERVER, admin, dsn_for, eventually
from .tcpproxy import Relay
from .test_fleet import planned_entry

NEVER = 3600.0  # a fallback poll that does not happen during a test


def store_of(cache: SemanticCache) -> PostgresStore:
    store = cache.pipeline.store
    assert isinstance(store, PostgresStore)
    return store


def listening_replica(cache: SemanticCache, poll_every: float) -> Listener:
    """Give ``cache`` a replica of item 0's scope, caught up after its listener began to listen."""
    listener = store_of(cache).listener
    listener.poll_every = poll_every
    cache.store(question(0), Answer, Answer(text="answer 0"), model="m")
    assert cache.lookup(paraphrase(0), Answer, model="m") is not None  # starts the listener
    eventually(listener.listening, "the listener listens")
    assert cache.lookup(paraphrase(0), Answer, model="m") is not None  # caught up since
    return listener


def write_raw(dsn: str, cache: SemanticCache, item: int, *, notify: bool) -> int:
    """Write an entry as another node would, on a connection of its own; with ``notify`` the
    transaction notifies as semcache's writes do, without it as a writer that does not."""
    _, entry = planned_entry(cache, item)
    assert entry is not None
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        entry_id, _ = insert(conn, entry, time.time())
        if notify:
            store_of(cache).listener.announce(conn, [entry.scope])
    return entry_id


def found(cache: SemanticCache, item: int) -> bool:
    hit = cache.lookup(paraphrase(item), Answer, model="m")
    assert hit is None or hit.value.text == f"answer {item}"
    return hit is not None and hit.tier == "semantic"


def test_a_write_in_another_process_wakes_the_replica(pg_dsn: str) -> None:
    """With no fallback poll due, only the other process's notification can bring its entry
    into this replica."""
    with open_node(pg_dsn) as reader:
        listener = listening_replica(reader, NEVER)
        assert not found(reader, 1)
        writer = multiprocessing.get_context("spawn").Process(
            target=fleet_node.store_items, args=(pg_dsn, [1, 2])
        )
        writer.start()
        writer.join(timeout=300)
        assert writer.exitcode == 0
        eventually(lambda: found(reader, 1) and found(reader, 2), "the other node's entries")
        assert listener.listening()


def test_a_notification_lost_while_not_listening_is_made_up_for(pg_dsn: str) -> None:
    """The link to the server is cut (the listener's session with it), an entry is written and
    notified meanwhile, then the link comes back: the reconnected listener makes every scope
    read the feed once, so the entry is found though its notification never arrived."""
    schema = pg_dsn.split("%3D")[1].split("&")[0]
    host, port = SERVER.split("@")[1].split("/")[0].split(":")
    relay = Relay((host, int(port)))
    relayed = dsn_for(schema, SERVER.replace(f"{host}:{port}", f"127.0.0.1:{relay.port}"))
    try:
        with open_node(relayed) as reader:
            listener = listening_replica(reader, NEVER)
            relay.cut()
            eventually(lambda: not listener.listening(), "the listener saw the link go")
            write_raw(pg_dsn, reader, 1, notify=True)  # nobody of the reader's hears it
            relay.restore()
            eventually(lambda: found(reader, 1), "the entry written while the link was cut")
            assert listener.listening()
    finally:
        relay.cut()


def test_a_killed_listener_reconnects_and_hears_again(pg_dsn: str) -> None:
    with open_node(pg_dsn) as reader:
        listener = listening_replica(reader, NEVER)
        killed = listener.backend_pid
        with admin() as conn:
            assert conn.execute("SELECT pg_terminate_backend(%s)", (killed,)).fetchone()[0]
        eventually(
            lambda: listener.listening() and listener.backend_pid not in (None, killed),
            "the listener reconnected",
        )
        assert found(reader, 0)  # the catch-up every reconnect causes is behind us
        write_raw(pg_dsn, reader, 1, notify=True)
        eventually(lambda: found(reader, 1), "an entry notified after the reconnect")


def test_a_write_that_is_never_notified_is_found_by_the_fallback_poll(pg_dsn: str) -> None:
    """A writer that does not notify (rows written by hand, an older semcache): the replica
    reads the feed at least every ``poll_every`` seconds anyway."""
    with open_node(pg_dsn) as reader:
        listener = listening_replica(reader, 0.5)
        write_raw(pg_dsn, reader, 1, notify=False)
        eventually(lambda: found(reader, 1), "an entry no notification announced")
        assert listener.listening()


def test_the_listener_closes_with_the_cache(pg_dsn: str) -> None:
    reader = open_node(pg_dsn)
    listener = listening_replica(reader, NEVER)
    pid = listener.backend_pid
    with admin() as conn:
        alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        assert conn.execute(alive, (pid,)).fetchone()[0] == 1
        reader.close()
        assert not listener.listening()
        eventually(lambda: conn.execute(alive, (pid,)).fetchone()[0] == 0, "the session is gone")


def test_a_cache_that_never_searches_opens_no_listener(pg_dsn: str) -> None:
    """Tools that only read or write rows (the CLI, an import) do not hold a listening session."""
    with open_node(pg_dsn) as cache:
        cache.store(question(1), Answer, Answer(text="answer 1"), model="m")
        assert cache.lookup(question(1), Answer, model="m") is not None  # exact tier only
        assert store_of(cache).listener.backend_pid is None


def test_no_password_in_the_listeners_logs(caplog: pytest.LogCaptureFixture) -> None:
    from .pgserver import private_schema, require_server

    require_server()
    secret = "s3cr3t-listen-pw"
    with private_schema() as schema, caplog.at_level(logging.DEBUG, logger="semcache"):
        dsn = dsn_for(schema, password=secret)  # trust auth: any password is accepted
        with open_node(dsn) as reader:
            listener = listening_replica(reader, NEVER)
            killed = listener.backend_pid
            with admin() as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (killed,))
            eventually(
                lambda: listener.listening() and listener.backend_pid != killed,
                "the listener reconnected",
            )
        logged = caplog.text
    assert "change notifications from PostgreSQL" in logged  # the interruption was logged
    assert secret not in logged


def _fork_child(cache: SemanticCache, parent_listener: Any) -> None:
    listener = store_of(cache).listener
    hit = cache.lookup(paraphrase(0), Answer, model="m")  # starts this process's listener
    assert hit is not None
    deadline = time.monotonic() + 60
    while not listener.listening() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listener.listening() and listener.backend_pid != parent_listener
    cache.close()


def test_a_forked_child_listens_on_its_own_session(pg_dsn: str) -> None:
    with open_node(pg_dsn) as cache:
        listener = listening_replica(cache, NEVER)
        parent = listener.backend_pid
        child = multiprocessing.get_context("fork").Process(
            target=_fork_child, args=(cache, parent)
        )
        child.start()
        child.join(timeout=120)
        assert child.exitcode == 0
        assert listener.listening() and listener.backend_pid == parent  # left alone
        write_raw(pg_dsn, cache, 1, notify=True)
        eventually(lambda: found(cache, 1), "the parent still hears notifications")
