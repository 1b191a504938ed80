"""Change notifications: a replica catches up when another node changed its scope, not on every
lookup.

Every write of entries (``PostgresStore.put_many``, ``delete``, expiry and eviction, imports)
sends ``pg_notify(channel, scope)`` in its own transaction, so the notification is delivered only
if, and once, the transaction committed (and its feed rows are visible: a listener receives a
notification only after the sending transaction is visible to a new snapshot). The payload is the
scope, or ``""`` for "any scope" (an import, or a scope too long for a payload). The channel is
``semcache_<md5 of the schema>``, so caches in other schemas of the same database do not wake
each other. (PostgreSQL queues notifications at commit under a lock of its own, so commits that
notify take turns across the server; a cache's commits of entries already take turns on the feed
lock, and one notification per scope per transaction keeps the queue small.)

Each ``PostgresStore`` that searches holds one more connection, opened on the first semantic
lookup, on which a daemon thread ``LISTEN``\\s and counts notifications per scope. A catch-up
notes the scope's ``token`` before it reads the feed; a later lookup whose token is unchanged
skips the feed (no round trip): nothing was committed in that scope since. The feed stays the
truth and notifications are only a hint, so every way one can be missed turns into a catch-up:

- while the listener is not connected (starting, lost, reconnecting with the backoff of
  ``connect.py``), ``token`` is None and every lookup reads the feed, as without notifications;
- once it listens again, every scope's token changes (whatever was sent meanwhile is read then);
- a connection that died without the client noticing (TCP keepalives find it within about a
  minute), a writer that does not notify (an older semcache, rows written by hand): the token
  also changes every ``POLL_EVERY`` seconds, so a scope in use reads the feed at least that often.

``POLL_EVERY`` is 5 seconds: the longest a change can stay unseen when its notification is lost
(a change that is notified is seen by the next lookup). A connection pooler in transaction mode
(PgBouncer) does not deliver notifications; nodes behind one see changes within ``POLL_EVERY``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from semcache.storage.postgres.connect import BACKOFF_FIRST, BACKOFF_MAX

try:
    import psycopg
    from psycopg import pq, sql
except ImportError:  # pragma: no cover - the store refuses to open without psycopg
    psycopg = None  # type: ignore[assignment]

logger = logging.getLogger("semcache")

POLL_EVERY = 5.0  # seconds: the longest a change whose notification was lost stays unseen
MAX_PAYLOAD = 1000  # bytes of a scope sent as the payload (PostgreSQL allows 8000); longer: ""
ANY_SCOPE = ""  # payload meaning "some scope changed": every scope reads the feed
# An idle listening socket learns that its server vanished only from TCP keepalives.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10}
_KEEPALIVES_COUNT = 3

Token = tuple[int, int, int]

# The listeners of this process by (location, channel): a write marks its scopes in every cache of
# the process on the same database at once, before its notification comes back.
_NEIGHBOURS: dict[tuple[str, str], weakref.WeakSet[Listener]] = {}
_NEIGHBOURS_LOCK = threading.Lock()


def channel_for(schema_md5: str) -> str:
    """The channel of a cache in the schema whose name has MD5 ``schema_md5``."""
    return f"semcache_{schema_md5}"


class Listener:
    """One LISTEN connection and its thread; ``token(scope)`` changes whenever ``scope`` may have
    changed in the database since it was last read.

    ``connect(extra)`` opens a new autocommit connection with ``extra`` libpq parameters;
    ``clean`` turns an error into a message without the password.
    """

    def __init__(
        self,
        connect: Callable[[dict[str, Any]], Any],
        channel: str,
        clean: Callable[[BaseException], str],
        location: str,
    ) -> None:
        self._connect = connect
        self.channel = channel
        self._clean = clean
        self.location = location
        self.poll_every = POLL_EVERY
        self._lock = threading.Lock()
        self._closed = False
        # Counters only grow, across forks too: a token taken before a fork is never taken again.
        self._marks: dict[str, int] = {}
        self._everything = 0  # bumped on each (re)connect and on an "any scope" notification
        self._reset()
        with _NEIGHBOURS_LOCK:
            _NEIGHBOURS.setdefault((location, channel), weakref.WeakSet()).add(self)

    def _reset(self) -> None:
        """Fresh state for this process (a forked child starts its own thread and connection,
        and never touches its parent's: closing it would end the parent's session)."""
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listening = False
        self.backend_pid: int | None = None  # the listening session's server process

    # -- what lookups ask ---------------------------------------------------------------------

    def token(self, scope: str) -> Token | None:
        """A value that changes when ``scope`` may have changed; None while not listening (the
        caller then reads the feed every time). Starts the listener on first use."""
        if self._closed:
            return None
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    for inherited in (self._wake_r, self._wake_w):
                        inherited.close()  # this process's copies only
                    self._reset()
        if self._thread is None:
            self._start()
        if not self._listening:
            return None
        slot = int(time.monotonic() // self.poll_every)
        return (self._marks.get(scope, 0), self._everything, slot)

    # -- what writes say ----------------------------------------------------------------------

    def announce(self, conn: Any, scopes: Iterable[str]) -> list[str]:
        """Notify listeners, inside the writing transaction on ``conn`` (delivered at its commit),
        that ``scopes`` changed; returns the payloads sent, for ``touch`` after the commit."""
        payloads = sorted({s if len(s.encode()) <= MAX_PAYLOAD else ANY_SCOPE for s in scopes})
        if payloads:
            conn.execute(
                "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", (self.channel, payloads)
            )
        return payloads

    def touch(self, scopes: list[str]) -> None:
        """Mark scopes this process changed, in every cache of the process on this database:
        its own writes are seen at once, before their notification comes back."""
        if not scopes:
            return
        with _NEIGHBOURS_LOCK:
            listeners = list(_NEIGHBOURS.get((self.location, self.channel), ()))
        for listener in listeners:
            with listener._lock:
                for scope in scopes:
                    listener._mark(scope)

    def listening(self) -> bool:
        return self._listening

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and close its connection; idempotent."""
        with _NEIGHBOURS_LOCK:
            key = (self.location, self.channel)
            if key in _NEIGHBOURS:
                _NEIGHBOURS[key].discard(self)
                if not _NEIGHBOURS[key]:
                    del _NEIGHBOURS[key]
        with self._lock:
            self._closed = True
            thread = self._thread if self._pid == os.getpid() else None
            self._stop.set()
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with contextlib.suppress(OSError):
            self._wake_r.close()
            self._wake_w.close()

    # -- the thread ---------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._run, name="semcache-listen", daemon=True)
            self._thread.start()

    def _mark(self, scope: str) -> None:
        if scope == ANY_SCOPE:
            self._everything += 1
        else:
            self._marks[scope] = self._marks.get(scope, 0) + 1

    def _on_notify(self, notify: Any) -> None:
        """psycopg's handler, for notifications that arrive with a statement's answer."""
        with self._lock:
            self._mark(str(notify.payload))

    def _run(self) -> None:
        backoff = BACKOFF_FIRST
        stop = self._stop
        while not stop.is_set():
            conn = None
            try:
                conn = self._connect({**_KEEPALIVES, "keepalives_count": _KEEPALIVES_COUNT})
                conn.add_notify_handler(self._on_notify)
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                with self._lock:
                    # Whatever was committed before LISTEN took effect was not notified here:
                    # every scope reads the feed once more.
                    self._everything += 1
                    self._listening = True
                    self.backend_pid = int(conn.info.backend_pid)
                backoff = BACKOFF_FIRST
                self._receive(conn)
            except Exception as exc:  # lost, refused, closed: lookups read the feed meanwhile
                if not stop.is_set():
                    logger.debug(
                        "semcache: change notifications from PostgreSQL at %s interrupted "
                        "(lookups read the change feed meanwhile): %s",
                        self.location,
                        self._clean(exc),
                    )
            finally:
                with self._lock:
                    self._listening = False
                    self.backend_pid = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            if stop.wait(backoff):
                break
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _receive(self, conn: Any) -> None:
        """Read notifications until stopped; raises when the connection is lost."""
        pgconn = conn.pgconn
        sock = conn.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([sock, self._wake_r], [], [], 60.0)
            if self._wake_r in ready or self._stop.is_set():
                return
            if sock not in ready:
                continue
            pgconn.consume_input()  # OperationalError when the server closed the connection
            if pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError("the listening connection was closed")
            with self._lock:
                while (notify := pgconn.notifies()) is not None:
                    self._mark(notify.extra.decode("utf-8", "replace"))
