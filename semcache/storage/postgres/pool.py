"""Connections borrowed from the application's psycopg pool: ``SemanticCache(pool)``.

An app that already runs a ``psycopg_pool.ConnectionPool`` can hand it to the cache instead of a
URL; the cache then holds no connection of its own for its statements. ``Connections`` (in
``connect.py``) keeps its outage, timeout and redaction rules and takes connections from here
instead of one per thread: each ``reading()`` or ``transaction()`` borrows one connection for
its statements and gives it back. The pool stays the owner's: its size is theirs, and the
cache's ``close()`` never closes it (it returns nothing it still holds, and closes only the
change listener's connection, below).

**Settings of a borrowed connection.** The store expects autocommit (its transactions are
explicit), tuples as rows, the server's default isolation and its own ``statement_timeout``;
the pool's connections may have been opened otherwise (``kwargs={"row_factory": dict_row}``,
no autocommit, no timeout). The client-side attributes are set on borrowing and restored on
return (no round trip). The timeout is a session setting, set in one statement with the old
value read back, and restored in one more before the connection returns: two round trips per
borrow (about 0.1 ms on loopback). ``SET LOCAL`` per transaction was the alternative; it would
have wrapped every read in a transaction (``BEGIN``, ``SET LOCAL``, ``COMMIT``: as many round
trips) and changed what ``reading()`` means: each statement commits, and the prebuilt-index
transfers open their own transactions inside it. Not restoring at all (set once per connection)
was cheaper but would leave the cache's 5 s timeout on the owner's other queries.

**A broken connection** (the server restarted since it was pooled) fails on that first
statement at once; it is closed, given back (the pool replaces it) and another one borrowed,
until ``connect_timeout`` has passed. So the first call after an outage does not fail once per
dead connection left in the pool. A pool that cannot give a connection within that time (the
server is down, or every connection is in use) raises an ``OperationalError`` the caller's
``guard`` treats as an outage.

**Client-side socket timeout.** The pool opens its own connections, so the ``tcp_user_timeout``
a URL cache adds (for a server that vanished without closing the connection) is the pool's to
set, in its conninfo or ``kwargs`` (README, "Running a fleet").

**An ``AsyncConnectionPool`` is refused** (``UsageError``): the store is synchronous (the async
wrapper runs it in threads, ``asyncio.to_thread``), and an async connection can only be used on
its event loop; borrowing one from a worker thread would block on that loop or deadlock it.
Its conninfo URL, or a sync pool on the same server, gives the same cache.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from semcache.errors import UsageError
from semcache.storage.location import redact

try:
    import psycopg
    from psycopg import conninfo as _conninfo
    from psycopg.rows import tuple_row
except ImportError:  # pragma: no cover - psycopg_pool depends on psycopg
    psycopg = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

# Keyword arguments of psycopg.connect that are not libpq parameters (a pool's ``kwargs`` may hold
# them): they shape the pool's connections, not the change listener's.
_PSYCOPG_ONLY = ("autocommit", "prepare_threshold", "context", "row_factory", "cursor_factory")
_ENTER = (
    "SELECT current_setting('statement_timeout'), current_setting('jit'), "
    "set_config('statement_timeout', %s, false), set_config('jit', 'off', false)"
)
_LEAVE = "SELECT set_config('statement_timeout', %s, false), set_config('jit', %s, false)"


def checked(pool: object) -> ConnectionPool[Any]:
    """``pool`` if the cache can borrow from it; ``UsageError`` saying what to pass instead."""
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

    if isinstance(pool, AsyncConnectionPool):
        raise UsageError(
            "SemanticCache takes a psycopg_pool.ConnectionPool, not an AsyncConnectionPool: the "
            "cache's store is synchronous (the async wrapper runs it in threads), and an async "
            "pool's connections belong to its event loop. Pass the pool's conninfo URL "
            "(SemanticCache(pool.conninfo)) or a ConnectionPool on the same server"
        )
    if not isinstance(pool, ConnectionPool):
        raise UsageError(f"expected a psycopg_pool.ConnectionPool, not a {type(pool).__name__}")
    if pool.closed:
        raise UsageError(
            f"the pool {pool.name!r} is not open: open it first (pool.open(), or "
            "`with ConnectionPool(...) as pool:`); the cache never opens or closes it"
        )
    return pool


def params(pool: ConnectionPool[Any]) -> tuple[dict[str, Any], str]:
    """The libpq parameters of the pool's connections (its conninfo and the libpq keys of its
    ``kwargs``, read now: either may be a function), and a location to show, without password."""
    conninfo = pool.conninfo() if callable(pool.conninfo) else str(pool.conninfo or "")
    kwargs = pool.kwargs() if callable(pool.kwargs) else dict(pool.kwargs or {})
    libpq = {k: v for k, v in kwargs.items() if k not in _PSYCOPG_ONLY}
    try:
        found: dict[str, Any] = _conninfo.conninfo_to_dict(conninfo, **libpq)
    except psycopg.Error:
        raise UsageError(
            f"the pool {pool.name!r} has no valid conninfo ({redact(conninfo)!r})"
        ) from None
    if conninfo.strip():
        location = redact(conninfo)
    else:  # everything in kwargs: show them, password left out
        location = _conninfo.make_conninfo(**{k: v for k, v in found.items() if k != "password"})
    return found, location


@contextlib.contextmanager
def borrowed(pool: ConnectionPool[Any], statement_timeout_ms: int, wait: float) -> Iterator[Any]:
    """A connection of ``pool`` set up as the store expects, for the ``with`` block; given back
    as the pool lent it. Waits at most ``wait`` seconds for a working one."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        try:
            conn = pool.getconn(timeout=max(left, 0.001))
        except psycopg.OperationalError:  # PoolTimeout, PoolClosed, TooManyRequests
            raise psycopg.OperationalError(
                f"no connection from the pool {pool.name!r} within {wait:g} s (the server is "
                "unreachable, or every connection of the pool is in use)"
            ) from None
        try:
            saved = _enter(conn, statement_timeout_ms)
            break
        except psycopg.OperationalError:  # a connection that died in the pool: try another
            _discard(pool, conn)
            if time.monotonic() >= deadline:
                raise
        except BaseException:
            _discard(pool, conn)
            raise
    try:
        yield conn
    finally:
        _leave(conn, saved)
        pool.putconn(conn)


def _enter(conn: Any, statement_timeout_ms: int) -> tuple[dict[str, Any], tuple[str, str]]:
    if conn.closed:
        raise psycopg.OperationalError("the pooled connection is closed")
    client = {
        "autocommit": conn.autocommit,
        "read_only": conn.read_only,
        "isolation_level": conn.isolation_level,
        "row_factory": conn.row_factory,
    }
    conn.autocommit, conn.read_only, conn.isolation_level = True, None, None
    conn.row_factory = tuple_row
    try:
        row = conn.execute(_ENTER, (str(statement_timeout_ms),)).fetchone()
    except BaseException:
        _restore_client(conn, client)
        raise
    return client, (str(row[0]), str(row[1]))


def _leave(conn: Any, saved: tuple[dict[str, Any], tuple[str, str]]) -> None:
    """Put back the owner's settings; a connection where that fails is closed (the pool then
    replaces it) rather than returned with the cache's timeout."""
    client, (timeout, jit) = saved
    try:
        conn.execute(_LEAVE, (timeout, jit))
        _restore_client(conn, client)
    except Exception:
        with contextlib.suppress(Exception):
            conn.close()


def _restore_client(conn: Any, client: dict[str, Any]) -> None:
    if conn.closed:
        return
    for name, value in client.items():
        setattr(conn, name, value)


def _discard(pool: ConnectionPool[Any], conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()
    with contextlib.suppress(Exception):
        pool.putconn(conn)
