"""A private PostgreSQL server with pgvector for the tests of ``search="pgvector"``.

The shared test server (``tests/pgserver.py``: Debian's PostgreSQL 15) has no pgvector. The
``pgserver`` wheel (the ``dev`` extra) ships PostgreSQL 16 with pgvector's ``vector.so`` and runs
offline: ONE server per test session, in a temporary directory, listening on a Unix socket only,
stopped and deleted at the end of the session. Run as root, pgserver starts it as a system user
``pgserver`` that it creates (PostgreSQL refuses to run as root). Each test gets its own schema.

Without the wheel these tests skip with a loud reason; under CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from .pgserver import summarize_skips as _summarize

SKIP_NOTE = "pgvector tests skipped"


def _missing() -> str:
    """Why no pgvector server can be started here ("" when it can)."""
    try:
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR in a container
            warnings.simplefilter("ignore")
            import pgserver  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed (pip install -e '.[dev]')"
    return ""


class Server:
    """The running server: ``dsn(schema)`` for a URL, ``admin()`` for a connection."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.uri = str(handle.get_uri())  # postgresql://postgres:@/postgres?host=<socket dir>

    def dsn(self, schema: str) -> str:
        return f"{self.uri}&options={quote(f'-csearch_path={schema}')}"

    def admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.uri, autocommit=True)

    @contextlib.contextmanager
    def schema(self) -> Iterator[str]:
        name = f"semcache_v_{uuid.uuid4().hex[:12]}"
        with self.admin() as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        try:
            yield name
        finally:
            with self.admin() as conn:
                conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture(scope="session")
def pgvector_server() -> Iterator[Server]:
    why = _missing()
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI needs the pgvector test server: {why}")
        pytest.skip(f"{SKIP_NOTE}: {why}")
    folder = Path(tempfile.mkdtemp(prefix="semcache-pgvector-")) / "data"
    import pgserver

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handle = pgserver.get_server(folder, cleanup_mode="delete")
    pid = handle.get_pid()
    try:
        yield Server(handle)
    finally:
        handle.cleanup()  # pg_ctl stop, then the data directory is deleted
        _gone(pid)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()


def _gone(pid: int | None) -> None:
    """The postmaster (and with it every backend) has exited: no process is left behind."""
    import psutil

    if pid is not None and psutil.pid_exists(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).wait(10)
        assert not psutil.pid_exists(pid), "the pgvector test server did not stop"


@pytest.fixture
def vector_dsn(pgvector_server: Server) -> Iterator[str]:
    """The URL of an empty private schema on the pgvector server."""
    with pgvector_server.schema() as schema:
        yield pgvector_server.dsn(schema)


def summarize_skips(terminalreporter: Any) -> None:
    """End the run with a loud line when the pgvector tests were skipped."""
    _summarize(terminalreporter, SKIP_NOTE, _missing)
