"""Connections to a PostgreSQL server: one per thread, time budgets, outages, no password leaks.

Each thread that uses the cache opens one connection, kept while the thread lives (only the
thread's own storage holds it strongly, so it closes when the thread ends): a pool of 8 worker
threads holds 8 connections per process. Given the application's ``psycopg_pool.ConnectionPool``
instead of a URL, each ``borrow()`` takes a connection from that pool and gives it back
(``pool.py``); the rules below hold the same way.

Time budget of one call (documented in README, "Running a fleet"): connecting waits at most
``connect_timeout`` seconds; every statement at most ``statement_timeout`` (server side) and the
socket at most that plus a second (``tcp_user_timeout``, client side, for a server that vanished
without closing the connection). When the server cannot be reached, the store is *down*: calls
fail at once with ``StoreUnavailableError`` (the pipeline turns that into a miss) until a backoff
of 0.25 s doubling to 5 s has passed, and then one call at a time probes the server. An outage
is logged once when it begins and once when it ends, and counted (``outages``).

psycopg's errors can quote the connection string; every error leaving this module is one of ours,
with the password replaced by ``***`` and no chained cause (``from None``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from semcache.errors import StoreError, StoreUnavailableError, UsageError
from semcache.storage.location import redact
from semcache.storage.postgres import pool as pooled

try:
    import psycopg
    from psycopg import conninfo as _conninfo
except ImportError:  # pragma: no cover - exercised by installs without the extra
    psycopg = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

logger = logging.getLogger("semcache")

CONNECT_TIMEOUT = 3.0  # seconds; libpq's minimum is 2
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 5.0
_SLOW_EVERY = 60.0  # seconds between two warnings about statement timeouts


class Connections:
    """Per-thread connections to one database (re-opened after a fork or a lost connection), or
    connections borrowed from the application's pool."""

    def __init__(
        self,
        dsn: str | ConnectionPool[Any],
        *,
        statement_timeout: float = 5.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        settings: str = "",
    ) -> None:
        """``settings``: more ``-c name=value`` server settings for every session."""
        if psycopg is None:
            raise UsageError(
                "a postgresql:// cache needs psycopg 3: pip install 'semcache[postgres]'"
            )
        self.pool: ConnectionPool[Any] | None = None  # the owner's: never closed here
        if isinstance(dsn, str):
            self.location = redact(dsn)
            try:
                params: dict[str, Any] = _conninfo.conninfo_to_dict(dsn)
            except psycopg.Error:
                raise UsageError(f"{self.location!r} is not a valid PostgreSQL URL") from None
        else:
            self.pool = pooled.checked(dsn)
            params, self.location = pooled.params(self.pool)
        self._secret = str(params.get("password") or "")
        self._timeout_ms = max(1, int(statement_timeout * 1000))
        self._connect_timeout = connect_timeout
        self._settings = settings
        self._params = self._with_budget(params)
        self._local = threading.local()
        self._state = threading.Lock()
        # (opening process, connection): weak, so a thread's connection closes when it ends.
        self._all: list[tuple[int, weakref.ref[Any]]] = []
        self._closed = False
        self._down_since: float | None = None  # monotonic time the current outage began
        self._retry_at = 0.0
        self._backoff = BACKOFF_FIRST
        self.outages = 0
        self.timeouts = 0
        self._told_slow = -_SLOW_EVERY
        self._budget = f"statement_timeout={statement_timeout:g} s"

    def _with_budget(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` with the time budget of the module docstring (URL and listener only: a
        pool's connections get the statement timeout when borrowed, ``pool.py``)."""
        ms, options = self._timeout_ms, str(params.get("options") or "")
        # JIT compiling costs ~13 ms, more than any of the cache's statements: it is off.
        params["options"] = (
            f"{options} -c statement_timeout={ms} -c jit=off {self._settings}".strip()
        )
        params.setdefault("connect_timeout", max(2, round(self._connect_timeout)))
        params.setdefault("tcp_user_timeout", ms + 1000)
        params.setdefault("application_name", "semcache")
        return params

    def __repr__(self) -> str:
        via = "" if self.pool is None else f", pool={self.pool.name!r}"
        return f"Connections({self.location!r}{via})"

    # -- connections ------------------------------------------------------------------------

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Any]:
        """A connection for the ``with`` block (autocommit: transactions are explicit): this
        thread's own, or one of the application's pool, given back afterwards. Use it inside
        ``guard()``: a failure to connect is an outage there.

        A borrow inside another on the same thread gets the connection already lent, as it
        would get the thread's own: a nested ``transaction()`` stays a savepoint of the outer
        one, and never waits on locks the outer one holds, or on a pool of one."""
        if self.pool is None:
            yield self.connection()
            return
        lent = getattr(self._local, "lent", None)
        if lent is not None:
            yield lent
            return
        if self._closed:
            raise StoreError("the cache is closed")
        self._may_probe()
        wait = float(self._params["connect_timeout"])
        with pooled.borrowed(self.pool, self._timeout_ms, wait) as conn:
            self._local.lent = conn
            try:
                yield conn
            finally:
                self._local.lent = None

    def connection(self) -> Any:
        """This thread's connection (autocommit: transactions are explicit), opened on demand."""
        if self._closed:
            raise StoreError("the cache is closed")
        if self.pool is not None:
            raise UsageError("a cache on a connection pool borrows connections: use borrow()")
        conn = getattr(self._local, "conn", None)
        if (
            conn is not None
            and getattr(self._local, "pid", None) == os.getpid()
            and not conn.closed
        ):
            return conn
        self._may_probe()
        try:
            conn = psycopg.connect(autocommit=True, **self._params)
        except psycopg.Error as exc:
            self._lost(exc)
            raise self._unavailable(exc) from None
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._state:
            self._all = [(pid, ref) for pid, ref in self._all if ref() is not None]
            self._all.append((os.getpid(), weakref.ref(conn)))
        return conn

    def dedicated(self, extra: dict[str, Any]) -> Any:
        """A new autocommit connection of this process outside the per-thread ones (the change
        listener's), with ``extra`` libpq parameters; psycopg's errors pass through (the caller
        cleans them with ``clean``). Closed by its owner, or by ``close``. On a pool, it is
        opened with the pool's parameters, read again each time, and takes no slot of the pool:
        the listener holds it for as long as the cache is open."""
        if self._closed:
            raise StoreError("the cache is closed")
        base = self._params if self.pool is None else self._with_budget(pooled.params(self.pool)[0])
        conn = psycopg.connect(autocommit=True, **{**base, **extra})
        with self._state:
            self._all.append((os.getpid(), weakref.ref(conn)))
        return conn

    def _may_probe(self) -> None:
        """Fail fast while the server is down; let one caller at a time try again after the
        backoff (the others keep failing fast while it waits for ``connect_timeout``)."""
        with self._state:
            if self._down_since is None:
                return
            now = time.monotonic()
            if now < self._retry_at:
                raise StoreUnavailableError(
                    f"PostgreSQL at {self.location} is unreachable; retrying in "
                    f"{self._retry_at - now:.2f} s"
                )
            self._retry_at = now + float(self._params["connect_timeout"]) + self._backoff

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn psycopg's errors into ours, track outages, drop a connection that broke."""
        try:
            yield
        except psycopg.errors.QueryCanceled as exc:
            with self._state:
                self.timeouts += 1
                now = time.monotonic()
                tell = now - self._told_slow >= _SLOW_EVERY
                if tell:
                    self._told_slow = now
            if tell:  # a slow database is logged at most once a minute, not on every call
                logger.warning(
                    "semcache: PostgreSQL at %s did not answer within %s; treated as a miss "
                    "(%d such timeouts so far)",
                    self.location,
                    self._budget,
                    self.timeouts,
                )
            raise StoreUnavailableError(
                f"PostgreSQL at {self.location} did not answer in time: {self.clean(exc)}"
            ) from None
        except psycopg.OperationalError as exc:
            self._forget_connection()
            self._lost(exc)
            raise self._unavailable(exc) from None
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL at {self.location}: {self.clean(exc)}") from None
        else:
            if self._down_since is not None:
                self._recovered()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One transaction on this thread's connection: commit on success, rollback on error."""
        with self.guard(), self.borrow() as conn, conn.transaction():
            yield conn

    @contextlib.contextmanager
    def reading(self) -> Iterator[Any]:
        """A connection for reads outside a transaction (each statement commits)."""
        with self.guard(), self.borrow() as conn:
            yield conn

    def close(self) -> None:
        """Close every connection this process opened; idempotent. A pool's connections are
        not this object's: they go back to it as each call ends, and the pool stays open.

        A forked child leaves its parent's connections alone: closing one would end the parent's
        session on the server (libpq sends a goodbye on the shared socket)."""
        with self._state:
            self._closed = True
            conns, self._all = self._all, []
        for pid, ref in conns:
            conn = ref()
            if conn is not None and pid == os.getpid():
                with contextlib.suppress(Exception):
                    conn.close()

    # -- outages ----------------------------------------------------------------------------

    def _lost(self, exc: BaseException) -> None:
        with self._state:
            now = time.monotonic()
            if self._down_since is None:
                self._down_since = now
                self._backoff = BACKOFF_FIRST
                self.outages += 1
                logger.warning(
                    "semcache: PostgreSQL at %s is unreachable; lookups are misses and answers "
                    "are not stored until it answers again: %s",
                    self.location,
                    self.clean(exc),
                )
            else:
                self._backoff = min(self._backoff * 2, BACKOFF_MAX)
            self._retry_at = now + self._backoff

    def _recovered(self) -> None:
        with self._state:
            if self._down_since is None:
                return
            lasted = time.monotonic() - self._down_since
            self._down_since = None
        logger.warning(
            "semcache: PostgreSQL at %s answers again after %.1f s", self.location, lasted
        )

    def _forget_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _unavailable(self, exc: BaseException) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"PostgreSQL at {self.location} is unreachable: {self.clean(exc)}"
        )

    def clean(self, exc: BaseException) -> str:
        """An error's message without the password (libpq may quote the connection string)."""
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        return text.replace(self._secret, "***") if self._secret else text
