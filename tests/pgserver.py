"""The PostgreSQL server tests run against, one private schema per test, and a stand-in embedder.

The server is ``SEMCACHE_TEST_POSTGRES`` (default: PostgreSQL on 127.0.0.1:5432, trust auth,
database ``test``), which development machines and CI run. It is shared with other test runs, so
a test never stops it and never touches another schema: each gets ``semcache_t_<random>``,
dropped afterwards. Without a server, PostgreSQL tests skip and the run ends with a loud note
saying so; under CI (``CI=true``) a missing server fails them instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import pytest

SERVER = os.environ.get("SEMCACHE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SKIP_NOTE = "PostgreSQL tests skipped"


@lru_cache(maxsize=1)
def unavailable() -> str:
    """Why the test server cannot be used ("" when it can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    try:
        with psycopg.connect(SERVER, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"no PostgreSQL server answers at {SERVER}: {str(exc).splitlines()[0]}"
    return ""


def require_server() -> None:
    why = unavailable()
    if not why:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs PostgreSQL: {why}")
    pytest.skip(f"{SKIP_NOTE}: {why}")


def admin() -> Any:
    import psycopg

    return psycopg.connect(SERVER, autocommit=True)


def dsn_for(schema: str, server: str = SERVER, password: str | None = None) -> str:
    """A URL whose tables live in ``schema`` (libpq's ``options``, as README shows users)."""
    if password is not None:
        server = server.replace("postgres@", f"postgres:{password}@", 1)
    # application_name names the schema, so that cleanup can end this test's leftover sessions.
    return f"{server}?options=-csearch_path%3D{schema}&application_name={schema}"


@contextlib.contextmanager
def private_schema() -> Iterator[str]:
    """A new empty schema, dropped with everything in it afterwards."""
    schema = f"semcache_t_{uuid.uuid4().hex[:12]}"
    with admin() as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield schema
    finally:
        with admin() as conn:
            # Sessions of a test that failed mid-way may still hold locks in the schema.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (schema,),
            )
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """The URL of an empty private schema on the test server."""
    require_server()
    with private_schema() as schema:
        yield dsn_for(schema)


def eventually(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Wait until ``condition()`` holds (a generous deadline, not a speed check)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout:g} s: {what}")
        time.sleep(0.01)


def summarize_skips(
    terminalreporter: Any, note: str = SKIP_NOTE, why: Callable[[], str] = unavailable
) -> None:
    """End the run with a loud line when tests skipped with ``note`` (by default the PostgreSQL
    tests) were skipped, saying ``why()``: never silently green."""
    skipped = terminalreporter.stats.get("skipped", [])
    ours = [r for r in skipped if note in str(getattr(r, "longrepr", ""))]
    if ours:
        terminalreporter.write_sep("!", f"{len(ours)} {note}: {why()}", yellow=True, bold=True)


class HashEmbedder:
    """A deterministic stand-in for MiniLM: texts that agree once lower-cased and stripped of
    trailing punctuation embed almost alike (cosine ~0.99), all others nearly orthogonal.

    Fleet tests run several processes on two shared cores; loading MiniLM in each would cost
    more than the tests, and a known geometry makes "a wrong answer" unambiguous.
    """

    name = "test-hash-64"
    dimension = 64

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [self._vector(text) for text in texts]
        return np.vstack(rows).astype(np.float32) if rows else np.zeros((0, 64), np.float32)

    def fits(self, text: str) -> bool:
        return True

    def _vector(self, text: str) -> np.ndarray:
        core = text.lower().strip().rstrip("?!. ")
        base = _gaussian(core, self.dimension)
        noise = _gaussian(text, self.dimension) * 0.08
        vector = base + noise
        return vector / np.linalg.norm(vector)


def _gaussian(text: str, dimension: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dimension)
