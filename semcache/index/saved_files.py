"""A scope's index as a file: the header a ``VectorIndex`` writes, and the checks that decide
whether a file it finds (saved beside the database, or a snapshot downloaded from it) is used.

Persistence: a scope of at least ``vector_index.PERSIST_AT`` vectors is saved beside the
database as one file ``<scope>.faiss`` (format in ``semcache.index.file_format``: a checked
header, written atomically, read without a copy of the whole file). A damaged, truncated, foreign
or mismatched file is refused (the caller rebuilds from the store; the next save replaces it); a
file of another format or ``vectors`` choice is left unused without a warning. A valid file is
always safe: the store is caught up from its watermark and every search result is checked
against the store.

Prebuilt snapshots (a fleet on PostgreSQL) are the same file, with a change-feed position as
their watermark (``"cursor": "feed"`` in the header), and pass the same checks.

Separate from ``vector_index`` because trusting a file is a question about the settings it was
made with, not about the scopes held in memory: nothing here takes a scope's lock or sees its
tombstones. Separate from ``file_format``, which knows bytes and checksums but not what a
header must agree with.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from semcache.index import file_format
from semcache.index.stages import storage_at

logger = logging.getLogger("semcache")


@dataclass(frozen=True)
class Refusal:
    """Why a file is not used ("" when there is none); damage is warned about, a file made with
    other settings only noted."""

    why: str
    damaged: bool = True


class Found(NamedTuple):
    """A file's index, once every check passed, with its stage and watermark."""

    index: Any
    kind: str  # "flat" or "hnsw"
    watermark: int


class SavedFiles:
    """Writes and reads scope files for one index's settings (dimension, stored vectors, database
    and embedder), which every file read must match, and reports a file refused."""

    def __init__(self, faiss: Any, dimension: int, vectors: str, owner: str, embedder: str) -> None:
        self._faiss = faiss
        self.dimension = dimension
        self.vectors = vectors
        self.owner = owner
        self.embedder = embedder
        self._reported: set[str] = set()

    def write(
        self, target: Path, index: Any, kind: str, watermark: int, cursor: str = "id"
    ) -> None:
        """Save ``index`` at ``target`` behind the header a reader checks before trusting it."""
        meta = {
            "kind": kind, "vectors": self.vectors, "dimension": self.dimension,
            "owner": self.owner, "embedder": self.embedder, "count": int(index.ntotal),
            "watermark": watermark, "cursor": cursor,
        }  # fmt: skip
        file_format.write(self._faiss, index, target, meta)

    def read(self, path: Path, crc32: int | None = None) -> Found | Refusal:
        """The index saved at ``path`` with its stage and watermark, or why not. ``crc32``: as
        computed while the file was downloaded (``file_format.Receiver``)."""
        try:
            handle = open(path, "rb", buffering=0)  # noqa: SIM115
        except FileNotFoundError:
            return Refusal("", damaged=False)
        except OSError as exc:
            return Refusal(f"cannot be read ({exc})")
        with handle:
            try:
                meta, start = file_format.read_header(handle)
                stale = self._stale(meta)
                if stale:
                    return Refusal(stale, damaged=False)
                index, watermark = self._read(handle, meta, start, crc32)
            except Exception as exc:  # any damage means: rebuild from the store
                return Refusal(f"is damaged ({exc})")
        return Found(index, str(meta["kind"]), watermark)

    def _stale(self, meta: dict[str, Any]) -> str:
        """Why a well-formed file was made with other settings ("" when it was not)."""
        if meta.get("format") != file_format.FORMAT:
            return f"has format {meta.get('format')!r}, not {file_format.FORMAT}"
        if meta.get("vectors") != self.vectors:
            return f"holds vectors={meta.get('vectors')!r}, not {self.vectors!r}"
        if meta.get("embedder", self.embedder) != self.embedder:  # files of 0.x name none
            return f"was built by embedder {meta.get('embedder')!r}, not {self.embedder!r}"
        return ""

    def _read(
        self, handle: io.FileIO, meta: dict[str, Any], start: int, crc32: int | None = None
    ) -> tuple[Any, int]:
        """Check a file's header against these settings and the bytes against their size and
        CRC-32, then let FAISS read the index from the same descriptor; ValueError on any
        mismatch."""
        faiss = self._faiss
        if meta.get("dimension") != self.dimension or meta.get("owner") != self.owner:
            raise ValueError("saved for another database or dimension")
        index = file_format.read_index(faiss, handle, meta, start, crc32)
        watermark = meta.get("watermark")
        if not isinstance(watermark, int) or not isinstance(index, faiss.IndexIDMap2):
            raise ValueError("not an index of entry ids")
        kind = meta.get("kind")
        if file_format.layout(faiss, index) != (kind, storage_at(self.vectors, kind)):
            raise ValueError(
                f"holds a {'/'.join(file_format.layout(faiss, index))} index, not its header's"
            )
        if index.ntotal != meta.get("count") or index.d != self.dimension:
            raise ValueError("vector count or dimension do not match")
        ids = faiss.vector_to_array(index.id_map)
        # A feed cursor counts changes, not ids: an id may exceed it (a failed insert uses one).
        highest = watermark if meta.get("cursor", "id") == "id" else np.iinfo(np.int64).max
        if len(ids) and (int(ids.max()) > highest or int(ids.min()) < 1):
            raise ValueError("vector ids out of range")
        return index, watermark

    def refuse(self, scope: str, why: str, damaged: bool = True, what: str = "saved index") -> None:
        """Log that ``scope``'s file (or snapshot) is not used: a warning when it is damaged, a
        note when it was made with other settings. Once per scope: a scope dropped to be rebuilt
        finds the same file again."""
        if scope in self._reported:
            return
        self._reported.add(scope)
        logger.log(
            logging.WARNING if damaged else logging.INFO,
            "semcache: %s of scope %s %s; rebuilt from the store", what, scope[:12], why,
        )  # fmt: skip
