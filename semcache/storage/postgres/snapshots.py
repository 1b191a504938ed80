"""Prebuilt indexes in the database: a node downloads a scope's index instead of building it.

Building a scope's HNSW graph costs minutes at a million entries (more when several nodes start
at once on shared cores); downloading it costs seconds. So a node that built a large scope
publishes the result, and a node that starts later installs it and applies the change feed from
the position it covers (``semcache.scopes``).

What is stored: the scope's saved-index file exactly as a SQLite cache keeps it beside its
database (``semcache.index.file_format``: a JSON header with the settings it was built with, the
feed position, the vector count and the CRC-32 of the index bytes, then the bytes FAISS wrote),
cut into ``CHUNK``-byte rows of ``index_snapshot_chunks`` (a bytea value is limited to 1 GB, and
a row at a time keeps both ends' memory small). One head row per scope in ``index_snapshots``
names the current chunk set and repeats what a node checks before downloading (settings, feed
position, size) plus the ids removed before that position (tombstones, which an HNSW graph cannot
drop). The header's checksum is verified before FAISS parses a byte, by the same code that reads
a file.

Consistency: a publish writes its chunks under a new name, moves the head row to it and deletes
the old chunks in one transaction; a download reads the head row and its chunks in one REPEATABLE
READ transaction. A reader therefore sees a whole old snapshot or a whole new one, never a mix.
Publishers take turns on an advisory lock (``pg_try_advisory_xact_lock``: a node that finds
another publishing skips, it does not queue behind a long upload), and a snapshot is replaced only
by one that covers a later feed position.

Time budget: moving a chunk may take longer than the statement budget of lookups, so these
transactions raise it locally (``SET LOCAL statement_timeout``) to ``TRANSFER_TIMEOUT_MS``; they
run in background threads, never on a lookup.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semcache.storage.base import Sink, SnapshotHead
from semcache.storage.postgres import migrations

CHUNK = 32 << 20  # bytes per chunk row
MAX_BYTES = 8 << 30  # a larger index is not published (the database is no bulk store)
TRANSFER_TIMEOUT_MS = 120_000  # per statement while chunks move (a background thread)

_HEAD = (
    "SELECT scope, snapshot, seq, kind, vectors, dimension, embedder, count, bytes, crc32, "
    "chunks, tombstones, created_at FROM index_snapshots WHERE scope = %s"
)


def head(conn: Any, scope: str) -> SnapshotHead | None:
    """The head row of ``scope``'s snapshot, or None."""
    row = conn.execute(_HEAD, (scope,), binary=True).fetchone()
    if row is None:
        return None
    tombstones = np.frombuffer(bytes(row[11]), dtype="<i8").astype(np.int64).tolist()
    return SnapshotHead(
        str(row[0]), str(row[1]), int(row[2]), str(row[3]), str(row[4]), int(row[5]),
        str(row[6]), int(row[7]), int(row[8]), int(row[9]), int(row[10]), tombstones,
        float(row[12]),
    )  # fmt: skip


def publish(
    conn: Any,
    scope: str,
    source: Path,
    meta: Mapping[str, Any],
    tombstones: Sequence[int],
    *,
    replacing: str = "",
) -> bool:
    """Make the saved-index file ``source`` (header ``meta``) ``scope``'s snapshot; False when
    another node is publishing, or the current snapshot covers the feed as far already (unless
    it is ``replacing``, the name of a snapshot the caller found damaged)."""
    size = source.stat().st_size
    if size > MAX_BYTES:
        return False
    seq = int(meta["watermark"])
    name = uuid.uuid4().hex
    with conn.transaction():
        conn.execute(f"SET LOCAL statement_timeout = {TRANSFER_TIMEOUT_MS}")
        key = migrations.lock_key(migrations.SNAPSHOT_LOCK)
        if not conn.execute(f"SELECT pg_try_advisory_xact_lock({key})").fetchone()[0]:
            return False
        current = head(conn, scope)
        if current is not None and current.seq >= seq and current.snapshot != replacing:
            return False
        chunks = 0
        with open(source, "rb") as handle:
            while block := handle.read(CHUNK):
                conn.execute(
                    "INSERT INTO index_snapshot_chunks (snapshot, n, data) VALUES (%s, %s, %s)",
                    (name, chunks, block),
                )
                chunks += 1
        removed = np.asarray(sorted(tombstones), dtype="<i8").tobytes()
        conn.execute(
            "INSERT INTO index_snapshots (scope, snapshot, seq, kind, vectors, dimension, "
            "embedder, count, bytes, crc32, chunks, tombstones, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (scope) DO UPDATE SET snapshot = excluded.snapshot, seq = excluded.seq, "
            "kind = excluded.kind, vectors = excluded.vectors, dimension = excluded.dimension, "
            "embedder = excluded.embedder, count = excluded.count, bytes = excluded.bytes, "
            "crc32 = excluded.crc32, chunks = excluded.chunks, tombstones = excluded.tombstones, "
            "created_at = excluded.created_at",
            (
                scope, name, seq, str(meta["kind"]), str(meta["vectors"]), int(meta["dimension"]),
                str(meta.get("embedder", "")), int(meta["count"]), size, int(meta["crc32"]),
                chunks, removed, time.time(),
            ),
        )  # fmt: skip
        if current is not None:
            conn.execute(
                "DELETE FROM index_snapshot_chunks WHERE snapshot = %s", (current.snapshot,)
            )
    return True


def download(conn: Any, scope: str, target: Sink) -> SnapshotHead | None:
    """Write ``scope``'s snapshot (the saved-index file) into ``target`` from one consistent
    snapshot of the database; None when there is none. A chunk missing or of the wrong total
    size raises ValueError (the caller treats the snapshot as damaged)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute(f"SET LOCAL statement_timeout = {TRANSFER_TIMEOUT_MS}")
        found = head(conn, scope)
        if found is None:
            return None
        written = 0
        for n in range(found.chunks):
            row = conn.execute(
                "SELECT data FROM index_snapshot_chunks WHERE snapshot = %s AND n = %s",
                (found.snapshot, n),
                binary=True,
            ).fetchone()
            if row is None:
                raise ValueError(f"chunk {n} of {found.chunks} is missing")
            written += target.write(row[0])
    if written != found.bytes:
        raise ValueError(f"{written} bytes stored, {found.bytes} announced")
    return found


def drop(conn: Any, scope: str) -> None:
    """Forget ``scope``'s snapshot (for tests and tools; nodes then build from the entries)."""
    with conn.transaction():
        conn.execute(
            "DELETE FROM index_snapshot_chunks WHERE snapshot IN "
            "(SELECT snapshot FROM index_snapshots WHERE scope = %s)",
            (scope,),
        )
        conn.execute("DELETE FROM index_snapshots WHERE scope = %s", (scope,))
