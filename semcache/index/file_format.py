"""The saved-index file format: one scope's FAISS index behind a checked JSON header.

Layout: a JSON header line padded to ``HEADER`` bytes (format, stage, vectors, dimension,
database, count, watermark, and the size and CRC-32 of the rest), then the serialized index.
Writing streams the index to a temporary file behind a blank header, fills the header in, syncs
and renames, so a reader sees a whole old file or a whole new one and nothing the size of the
index is held in memory. Reading checks the size and the CRC-32 in small chunks *before* FAISS
parses anything (FAISS trusts the sizes it reads: one flipped bit could make it allocate
gigabytes), then lets FAISS read from the same descriptor. What the header must agree with (the
database, the dimension, the index's own layout) is ``semcache.index.saved_files``'s business.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import zlib
from pathlib import Path
from typing import Any

FORMAT = 2  # 2: "vectors" in the header, header padded to HEADER bytes
HEADER = 1024  # the header line's width, newline included: written first, filled in last
CHUNK = 4 << 20  # bytes per read or write while streaming a saved file
QUANTIZERS = {"fp16": "QT_fp16", "sq8": "QT_8bit"}  # FAISS ScalarQuantizer types


def folder_for(database: Path) -> Path:
    """Where a database's saved indexes live: ``<database file>.index/``."""
    return database.with_name(database.name + ".index")


def peek(path: Path) -> dict[str, Any] | None:
    """The header of a saved file, or None when it has none that parses (nothing else checked)."""
    try:
        with open(path, "rb", buffering=0) as handle:
            return read_header(handle)[0]
    except (OSError, ValueError):
        return None


def write(faiss: Any, index: Any, target: Path, meta: dict[str, Any]) -> None:
    """Save ``index`` at ``target`` with ``meta`` (plus format, size and CRC-32) as its header."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    crc, size = 0, 0

    def put(chunk: bytes) -> int:
        nonlocal crc, size
        crc, size = zlib.crc32(chunk, crc), size + len(chunk)
        return handle.write(chunk)

    try:
        with open(tmp, "wb") as handle:
            handle.write(b" " * (HEADER - 1) + b"\n")
            faiss.write_index(index, faiss.PyCallbackIOWriter(put, CHUNK))
            head = json.dumps({"format": FORMAT, **meta, "bytes": size, "crc32": crc}).encode()
            if len(head) >= HEADER:
                raise ValueError("index header too long")
            handle.seek(0)
            handle.write(head.ljust(HEADER - 1) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_header(handle: io.FileIO) -> tuple[dict[str, Any], int]:
    """The header line of a saved file as a dict, and where the index starts."""
    head = handle.read(HEADER)
    end = head.find(b"\n")
    if end < 0:
        raise ValueError("no header line")
    meta = json.loads(head[:end])
    if not isinstance(meta, dict):
        raise ValueError("the header is not a JSON object")
    return meta, end + 1


def read_index(
    faiss: Any, handle: io.FileIO, meta: dict[str, Any], start: int, crc32: int | None = None
) -> Any:
    """The index behind the header, once its size and checksum match; ValueError otherwise.
    ``crc32``: the checksum of the index bytes as a ``Receiver`` computed them while the file
    was written (spares reading it twice)."""
    size = meta.get("bytes")
    if not isinstance(size, int) or os.fstat(handle.fileno()).st_size != start + size:
        raise ValueError("file size does not match its header")
    if crc32 is None or start != HEADER:
        crc32 = _crc32(handle, start, size)
    if crc32 != meta.get("crc32"):
        raise ValueError("checksum does not match")
    handle.seek(start)
    index = faiss.read_index(faiss.PyCallbackIOReader(handle.read, CHUNK))
    if handle.tell() != start + size:
        raise ValueError("the index ends before the file does")
    return index


class Receiver:
    """A file-like sink for a saved file arriving in pieces (a download): writes them to
    ``handle`` and computes the CRC-32 of everything after the header on the way."""

    def __init__(self, handle: io.BufferedWriter) -> None:
        self._handle = handle
        self._offset = 0
        self.crc32 = 0

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data)
        skip = max(0, min(len(view), HEADER - self._offset))
        self.crc32 = zlib.crc32(view[skip:], self.crc32)
        self._offset += len(view)
        return self._handle.write(view)


def layout(faiss: Any, index: Any) -> tuple[str, str]:
    """``(stage, storage)`` of an ``IndexIDMap2``, e.g. ``("hnsw", "sq8")``; "?" for parts
    semcache never builds."""
    inner = faiss.downcast_index(index.index)
    if inner.metric_type != faiss.METRIC_INNER_PRODUCT:
        return "?", "?"
    stage, storage = "flat", inner
    if isinstance(inner, faiss.IndexHNSW):
        stage, storage = "hnsw", faiss.downcast_index(inner.storage)
    if isinstance(storage, faiss.IndexFlat):
        return stage, "float32"
    if isinstance(storage, faiss.IndexScalarQuantizer):
        for name, quantizer in QUANTIZERS.items():
            if storage.sq.qtype == getattr(faiss.ScalarQuantizer, quantizer):
                return stage, name
    return stage, "?"


def _crc32(handle: io.FileIO, start: int, size: int) -> int:
    """CRC-32 of ``size`` bytes from ``start``, read in chunks into one reused buffer."""
    handle.seek(start)
    buffer = memoryview(bytearray(min(size, CHUNK)))
    crc = 0
    while size > 0:
        got = handle.readinto(buffer[: min(size, len(buffer))])
        if not got:
            raise ValueError("file shorter than its header says")
        crc = zlib.crc32(buffer[:got], crc)
        size -= got
    return crc
