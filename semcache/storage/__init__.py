"""Storage, the source of truth: the ``Store`` protocol and its SQLite and PostgreSQL engines.

``base`` (the protocol, ``NewEntry``), ``location`` (paths and URLs), ``schema`` (tables of a cache
file), ``bookkeeping`` (counters, vetoes, audit, thresholds, feedback, shadow), ``sqlite``
(``SQLiteStore``), ``sqlite_connect`` (its connections and write transaction), ``ledger``
(bookkeeping buffered off the hot path) and ``instructor_table`` (instructor's ``cache=`` table);
``postgres/`` is the PostgreSQL engine (``PostgresStore``), chosen by ``open_location`` for a
``postgresql://`` URL or a ``psycopg_pool.ConnectionPool`` and imported only then.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

from semcache.errors import CacheNotFoundError, UsageError
from semcache.storage.base import SEARCHES, Changes, NewEntry, Rows, Search, Store, VectorSearch
from semcache.storage.location import (
    SCHEMES,
    Location,
    is_pool,
    is_postgres,
    redact,
    sqlite_target,
)
from semcache.storage.sqlite import SQLiteStore

__all__ = [
    "SCHEMES",
    "SEARCHES",
    "Changes",
    "Location",
    "NewEntry",
    "Rows",
    "SQLiteStore",
    "Search",
    "Store",
    "VectorSearch",
    "open_existing",
    "open_location",
    "open_store",
]


def open_store(location: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> SQLiteStore:
    """The store at ``location``: a SQLite file path, ``":memory:"`` or a ``sqlite://`` URL.

    Any other URL scheme raises ``UsageError`` (naming the supported ones) and creates nothing.
    """
    return SQLiteStore(sqlite_target(location), busy_timeout=busy_timeout)


def open_location(
    location: Location, *, busy_timeout: float = 5.0, search: Search = "local"
) -> Store:
    """The store at ``location``: a PostgreSQL database for a ``postgresql://`` or
    ``postgres://`` URL or a ``psycopg_pool.ConnectionPool`` (``busy_timeout`` then bounds every
    statement), else ``open_store``. ``search="pgvector"`` (PostgreSQL only) opens a store that
    searches its own vectors."""
    if search not in SEARCHES:
        raise UsageError(f"search must be one of {', '.join(SEARCHES)}; got {search!r}")
    if is_postgres(location) or is_pool(location):
        from semcache.storage.postgres import PostgresStore

        return PostgresStore(_postgres(location), busy_timeout=busy_timeout, search=search)
    if search != "local":
        raise UsageError(f"search={search!r} needs a postgresql:// cache; a file searches locally")
    return open_store(cast("str | os.PathLike[str]", location), busy_timeout=busy_timeout)


def open_existing(location: Location, *, busy_timeout: float = 5.0) -> Rows:
    """The store of a cache that exists, for maintenance (``semcache.ops``, the command line).

    Opening a store creates a missing file or an empty schema; a typo must not produce an empty
    cache reporting zeros. A missing file, or a PostgreSQL schema without semcache's tables, is a
    ``CacheNotFoundError``; a server that cannot be reached a ``StoreUnavailableError``. Messages
    show a URL with its password replaced by ``***``.
    """
    if is_postgres(location) or is_pool(location):
        from semcache.storage.postgres import PostgresStore

        return PostgresStore(_postgres(location), busy_timeout=busy_timeout, create=False)
    location = cast("str | os.PathLike[str]", location)
    target = sqlite_target(location)  # a URL of another engine is a UsageError naming ours
    if target != ":memory:" and not Path(target).is_file():
        raise CacheNotFoundError(f"{redact(os.fspath(location))}: no such cache file")
    return cast(Rows, open_store(target, busy_timeout=busy_timeout))


def _postgres(location: Location) -> Any:
    """A PostgreSQL location as PostgresStore takes it: the URL as a str, or the pool itself."""
    return os.fspath(location) if isinstance(location, (str, os.PathLike)) else location
