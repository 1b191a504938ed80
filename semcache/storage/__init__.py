"""Storage, the source of truth: the ``Store`` protocol and its SQLite implementation.

``base`` (the protocol, ``NewEntry``), ``location`` (paths and URLs), ``schema`` (tables of a cache
file), ``bookkeeping`` (counters, vetoes, audit, thresholds, feedback, shadow), ``sqlite``
(``SQLiteStore``), ``ledger`` (bookkeeping buffered off the hot path) and ``instructor_table``
(instructor's ``cache=`` table). A second engine implements ``Store`` and is chosen by
``open_store`` from the location's URL scheme.
"""

from __future__ import annotations

import os

from semcache.storage.base import NewEntry, Store
from semcache.storage.location import SCHEMES, sqlite_target
from semcache.storage.sqlite import SQLiteStore

__all__ = ["SCHEMES", "NewEntry", "SQLiteStore", "Store", "open_store"]


def open_store(location: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> SQLiteStore:
    """The store at ``location``: a SQLite file path, ``":memory:"`` or a ``sqlite://`` URL.

    Any other URL scheme raises ``UsageError`` (naming the supported ones) and creates nothing.
    """
    return SQLiteStore(sqlite_target(location), busy_timeout=busy_timeout)
