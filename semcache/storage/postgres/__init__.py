"""PostgreSQL storage for a fleet of app servers sharing one cache.

``store`` (``PostgresStore``, the ``Store`` protocol), ``entries`` (the statements on the entries
table), ``connect`` (per-thread connections, time budgets, outages, password redaction),
``migrations`` (the versioned schema), ``settings`` (what a cache was created with), ``feed`` (the
change feed replicas catch up from), ``listen`` (the notifications that tell a replica when to read
it), ``snapshots`` (prebuilt indexes a new node downloads instead of building) and ``books``
(bookkeeping statements). psycopg 3 is imported only here, and only when a ``postgresql://``
location is opened (the ``semcache[postgres]`` extra).
"""

from __future__ import annotations

from semcache.storage.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
