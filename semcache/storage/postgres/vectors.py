"""Searching a scope's vectors inside PostgreSQL with pgvector (``search="pgvector"``).

The default is a FAISS replica per scope in every node's memory (``semcache.scopes``); with
pgvector a lookup instead sends its vector to the database and reads the nearest entries back,
``ORDER BY embedding_vector <=> query LIMIT k`` inside the scope. No node holds vectors in memory
and none catches up from the feed; every lookup costs a round trip and the server's search.

Where the vectors live: a generated column ``entries.embedding_vector vector(d)``, computed by the
database from ``entries.embedding`` (the little-endian float32 bytes every engine stores) with
``semcache_vector_of``. Being generated, it is filled whoever writes the row: a node searching
locally, an import from SQLite, a row inserted by hand; and it goes away with its row, so a deleted,
expired or evicted entry is never proposed once its delete commits. An HNSW index
(``vector_cosine_ops``) serves the search when the extension has it (pgvector 0.5.0 and later;
earlier ones scan exactly).

The column is migration 5, applied only when a cache is opened with ``search="pgvector"`` (and
with the first vector, which gives the dimension): a database on a server without pgvector, and
every cache that never asks for it, keep the schema of migration 4. Once applied it stays, and
stays correct for every node whatever its choice.

HNSW in pgvector before 0.8 filters by scope *after* the graph search (``hnsw.ef_search``
candidates, then ``WHERE scope = ...``): a scope holding a small share of a large table may get
fewer than ``k`` candidates back. ``nearest`` then searches that scope exactly (the scope's rows
through the ``(scope, id)`` index), so a small scope is searched exactly rather than missed.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from semcache.errors import ConfigMismatchError, UsageError
from semcache.storage.postgres import migrations

logger = logging.getLogger("semcache")

VERSION = 5  # the migration number of the column and its index
DESCRIPTION = "pgvector search column"
EF_SEARCH = 128  # as the local HNSW graphs (semcache.index.vector_index.HNSW_EF_SEARCH)

# float32 little-endian bytes -> real[]: bit fields decoded exactly (normal, subnormal, signed
# zero). ``+`` and parentheses, not ``|``: PostgreSQL gives ``|`` and ``<<`` one precedence.
# PL/pgSQL, not SQL, for ``raw``: a row's embedding is usually stored out of line (TOAST), and
# an inlined SQL function fetched it again for every byte read (17 ms a row instead of 0.3).
_DECODE = """CREATE FUNCTION semcache_vector_of(b bytea) RETURNS real[]
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    raw bytea := b;  -- fetched and decompressed once, here
BEGIN
    RETURN (SELECT array_agg(CASE WHEN e = 0 THEN m * 2::float8 ^ -149
                                  ELSE (1 + m * 2::float8 ^ -23) * 2::float8 ^ (e - 127) END
                             * CASE WHEN x >= 2147483648 THEN -1 ELSE 1 END ORDER BY i)::real[]
        FROM (SELECT i, x, (x >> 23) & 255 AS e, x & 8388607 AS m
              FROM (SELECT i, get_byte(raw, 4 * i)::bigint
                              + (get_byte(raw, 4 * i + 1)::bigint << 8)
                              + (get_byte(raw, 4 * i + 2)::bigint << 16)
                              + (get_byte(raw, 4 * i + 3)::bigint << 24) AS x
                    FROM generate_series(0, length(raw) / 4 - 1) AS i) AS bits) AS parts);
END $$"""


class InDatabase:
    """The pgvector search of one store: the extension found (or created) when the store
    opens, the search column added with the first vector when the database lacks it."""

    def __init__(self, conn: Any) -> None:
        self.version, self.schema = extension(conn)
        self.hnsw = has_hnsw(self.version)
        self.dimension = column_dimension(conn)  # None until migration 5 is applied

    def nearest(
        self, conn: Any, scope: str, vector: np.ndarray, k: int, now: float
    ) -> list[tuple[int, float]]:
        if self.dimension is None:
            enable(conn, len(vector), self.schema, self.hnsw)
            self.dimension = column_dimension(conn)
        if self.dimension != len(vector):
            raise ConfigMismatchError(
                f"the database's pgvector column holds {self.dimension} dimensions; this "
                f"embedder gives {len(vector)}"
            )
        return nearest(conn, self.schema, scope, vector, k, now)


def extension(conn: Any, *, create: bool = True) -> tuple[str, str]:
    """pgvector's (version, schema) in this database, creating the extension (in ``public``)
    when it is missing, the server has it and the role may; ``UsageError`` saying which of
    these fails otherwise."""
    found = _installed(conn)
    if found is not None:
        return found
    available = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    if available is None:
        raise UsageError(
            "search='pgvector' needs the pgvector extension, which this PostgreSQL server does "
            "not have; install it on the server, or use the default search='local'"
        )
    if not create:
        raise UsageError("search='pgvector': the pgvector extension is not created here")
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
    except Exception as exc:  # psycopg's, without the DSN: the role lacks the right
        raise UsageError(
            "search='pgvector': the server has pgvector but this role cannot create it "
            f"({type(exc).__name__}); a superuser runs CREATE EXTENSION vector once"
        ) from None
    created = _installed(conn)
    assert created is not None
    logger.info("semcache: created the pgvector extension %s", created[0])
    return created


def _installed(conn: Any) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT e.extversion, n.nspname FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def has_hnsw(version: str) -> bool:
    """HNSW indexes came with pgvector 0.5.0."""
    return _numbers(version) >= (0, 5, 0)


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def statements(dimension: int, schema: str, hnsw: bool) -> tuple[str, ...]:
    """Migration 5 for vectors of ``dimension`` with pgvector installed in ``schema``."""
    vector = f"{_quote(schema)}.vector({int(dimension)})"
    made: tuple[str, ...] = (
        _DECODE,
        # A blob of another width (never written by semcache) gives NULL, not a failed write.
        f"""ALTER TABLE entries ADD COLUMN embedding_vector {vector} GENERATED ALWAYS AS (
            CASE WHEN length(embedding) = {4 * int(dimension)}
                 THEN semcache_vector_of(embedding)::{vector} END) STORED""",
    )
    if hnsw:
        made += (
            "CREATE INDEX entries_embedding_hnsw ON entries USING hnsw "
            f"(embedding_vector {_quote(schema)}.vector_cosine_ops)",
        )
    # Statistics of the new column now, not at autovacuum's next pass: without them the planner
    # may scan the table instead of using the index.
    return (*made, "ANALYZE entries")


def enable(conn: Any, dimension: int, schema: str, hnsw: bool) -> bool:
    """Apply migration 5 unless the database has it; True when this call applied it. Building
    the column and index of a large cache takes long (the table is rewritten): no statement
    timeout applies to it."""
    if VERSION in migrations.applied(conn):
        return False
    owner = conn.execute(
        "SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass('entries')"
    ).fetchone()
    if not (owner and owner[0]):
        raise UsageError(
            "search='pgvector' needs the search column of migration 5: open the cache once with "
            "search='pgvector' as the role that owns its tables (README, 'Running a fleet')"
        )
    done = migrations.apply(
        conn,
        VERSION,
        DESCRIPTION,
        ("SET LOCAL statement_timeout = 0", *statements(dimension, schema, hnsw)),
    )
    if done:
        logger.info("semcache: added the pgvector search column (%d dimensions)", dimension)
    return done


def column_dimension(conn: Any) -> int | None:
    """The dimension of ``entries.embedding_vector``; None when the column does not exist."""
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass('entries') "
        "AND attname = 'embedding_vector' AND NOT attisdropped"
    ).fetchone()
    return None if row is None else int(row[0])


def nearest(
    conn: Any, schema: str, scope: str, vector: np.ndarray, k: int, now: float
) -> list[tuple[int, float]]:
    """The ``k`` live entries of ``scope`` nearest to ``vector`` as ``(id, cosine similarity)``,
    best first: the HNSW index's answer, or an exact search of the scope when it returned fewer
    (see the module's docstring)."""
    text = "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"
    distance = f"embedding_vector OPERATOR({_quote(schema)}.<=>) %s::{_quote(schema)}.vector"
    select = (
        f"SELECT id, {distance} FROM entries WHERE scope = %s AND embedding_vector IS NOT NULL "
        "AND (expires_at IS NULL OR expires_at > %s) ORDER BY "
    )
    values = (text, scope, now, text, k)
    rows = conn.execute(f"{select}{distance} LIMIT %s", values).fetchall()
    if len(rows) < k:
        # ``+ 0`` makes the order an expression no index matches: an exact scan of the scope.
        rows = conn.execute(f"{select}({distance}) + 0 LIMIT %s", values).fetchall()
    return [(int(i), 1.0 - float(d)) for i, d in rows]


def _quote(name: str) -> str:
    """A schema name as an SQL identifier (read from the catalog, never from a caller)."""
    return '"' + name.replace('"', '""') + '"'
