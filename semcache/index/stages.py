"""The FAISS index that holds a scope's vectors at each stage (exact flat search, then an HNSW
graph) for each ``vectors=`` choice.

Stored vectors (``vectors=``): ``"float32"`` whole; ``"fp16"`` halved (FAISS scalar quantizer,
flat and HNSW); ``"sq8"`` one byte per dimension once the scope is an HNSW graph, its ranges trained
on the scope's vectors at migration (fp16 while flat: too few vectors to train on). Compression
only changes which candidates are proposed: the cache re-scores each against the float32 vector in
the store, so the similarity that decides a hit is exact whatever is chosen.

Separate from ``vector_index``, which decides when a scope changes stage and how its graph is
tuned (the measured HNSW parameters live there) and holds the scopes under its lock: this module
only makes FAISS objects. ``saved_files`` checks a file's index against the same mapping
(``storage_at``), so what is built and what is accepted cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np

from semcache.index import file_format

VectorKind = Literal["float32", "fp16", "sq8"]
VECTOR_KINDS: tuple[VectorKind, ...] = get_args(VectorKind)


def storage_at(vectors: str, stage: Any) -> str:
    """How vectors are held at a stage: sq8 waits for HNSW to have data to train on."""
    return "fp16" if stage == "flat" and vectors == "sq8" else vectors


def new_flat(faiss: Any, dimension: int, vectors: str) -> Any:
    """An empty exact-search index of entry ids."""
    if storage_at(vectors, "flat") == "float32":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
    quantizer = faiss.ScalarQuantizer.QT_fp16
    inner = faiss.IndexScalarQuantizer(dimension, quantizer, faiss.METRIC_INNER_PRODUCT)
    return faiss.IndexIDMap2(inner)


def new_hnsw(
    faiss: Any,
    dimension: int,
    vectors: str,
    ids: np.ndarray,
    data: np.ndarray,
    *,
    m: int,
    ef_construction: int,
) -> Any:
    """An HNSW graph of ``data`` under entry ids ``ids``, built with ``m`` links per vector and
    ``ef_construction`` breadth (its search breadth is left for the caller to set)."""
    metric = faiss.METRIC_INNER_PRODUCT
    if vectors == "float32":
        graph = faiss.IndexHNSWFlat(dimension, m, metric)
    else:
        quantizer = getattr(faiss.ScalarQuantizer, file_format.QUANTIZERS[vectors])
        graph = faiss.IndexHNSWSQ(dimension, quantizer, m, metric)
        graph.train(data)  # sq8: each dimension's range; fp16: nothing to learn
    graph.hnsw.efConstruction = ef_construction
    index = faiss.IndexIDMap2(graph)
    index.add_with_ids(data, ids)
    return index
