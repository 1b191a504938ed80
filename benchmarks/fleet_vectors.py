"""Vectors shaped like MiniLM's for ``fleet.py`` (``--vectors real``, the default).

An HNSW graph's search cost depends on how the stored vectors are spread: independent Gaussian
vectors in 384 dimensions (``--vectors gaussian``, the ``Embedder384`` stand-in) are the worst
case, far from what sentence embeddings look like. So by default the scope holds
synthetic-from-real vectors, made as in ``scale.py``: 11,000 real sentences of the shared pair sets
embedded with the bundled MiniLM, then mixes of two of them plus noise. Item ``i``'s stored prompt
("Fleet item i?") embeds to stored vector ``i``; its paraphrase ("fleet item i") to that vector plus
Gaussian noise (cosine about 0.96 to it).

Mixes that share a real sentence lie close together, so some paraphrases are nearer another entry,
or have a second one within the cache's answer-agreement margin (then no answer is served, rightly).
Only unambiguous items are probed: the paraphrase's exact nearest entry (numpy brute force) is its
own, at or above the threshold, and the next one is more than the margin below. Items stored
during the run (the lag measurement) get the vectors of held-out real sentences that are
unambiguous in the same sense. (Vectors in random directions are a poor choice there: with
efSearch 128, about 1% of such outliers added to a 100k graph are not found from a
near-duplicate query, though they are from their own vector.)

The vectors are written once to a folder that every node process maps read-only.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from scale import HELD_OUT, QUERY_NOISE, normalized, real_sentences, real_vectors, synthesize

STORED, PROBES = "stored.npy", "probes.npy"
_ITEM = re.compile(r"(\d+)")


class RealLike:
    """The ``Embedder`` protocol over the prepared vectors: a table lookup per text."""

    name = "bench-real-384"
    dimension = 384

    def __init__(self, folder: str | Path) -> None:
        self.stored = np.load(Path(folder) / STORED, mmap_mode="r")
        self.probes = np.load(Path(folder) / PROBES, mmap_mode="r")

    def warm(self, texts: list[str]) -> None:
        """Nothing to precompute (``Precomputed``'s interface)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            match = _ITEM.search(text)
            item = int(match.group(1)) if match else 0
            rows.append(self.stored[item] if text.startswith("Fleet") else self.probes[item])
        return np.vstack(rows).astype(np.float32)

    def fits(self, text: str) -> bool:
        return True


def prepare(
    folder: Path, entries: int, extra: int, threshold: float, margin: float, pool: int = 5000
) -> tuple[list[int], str]:
    """Write ``entries + extra`` stored vectors and their paraphrases' to ``folder``; return the
    unambiguous items among ``pool`` sampled stored ones, and which embedder made the real
    vectors."""
    real, label = real_vectors(real_sentences(12_000))
    stored, _ = synthesize(real[:-HELD_OUT], entries, seed=0)
    rng = np.random.default_rng(1)
    fresh = real[-HELD_OUT:]  # sentences no stored vector was made from
    noise = rng.normal(0, QUERY_NOISE, fresh.shape).astype(np.float32)
    first, second, row = _top2(np.vstack([stored, fresh]), normalized(fresh + noise))
    unambiguous = (row == entries + np.arange(len(fresh))) & (second < first - margin)
    order = np.argsort(~unambiguous, kind="stable")[:extra]  # the unambiguous ones first
    if not unambiguous[order].all():
        raise RuntimeError(f"fewer than {extra} unambiguous held-out sentences to store")
    stored = np.vstack([stored, fresh[order]])
    probes = normalized(stored + rng.normal(0, QUERY_NOISE, stored.shape).astype(np.float32))
    probes[entries:] = normalized(fresh[order] + noise[order])
    np.save(folder / STORED, stored)
    np.save(folder / PROBES, probes)
    sampled = rng.choice(entries, min(pool, entries), replace=False)
    first, second, row = _top2(stored, probes[sampled])
    clean = (row == sampled) & (first >= threshold) & (second < first - margin)
    return sorted(int(i) for i in sampled[clean]), label


def _top2(stored: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brute force: each query's best and second-best cosine over ``stored``, and the best row."""
    first = np.full(len(queries), -np.inf, dtype=np.float32)
    second = first.copy()
    row = np.zeros(len(queries), dtype=np.int64)
    cols = np.arange(len(queries))
    for start in range(0, len(stored), 16_384):
        sims = stored[start : start + 16_384] @ queries.T
        top = sims.argmax(axis=0)
        best = sims[top, cols]
        sims[top, cols] = -np.inf
        runner = sims.max(axis=0)
        # Merge this chunk's best two with the running best two.
        second = np.where(best > first, np.maximum(first, runner), np.maximum(second, best))
        better = best > first
        first, row = np.where(better, best, first), np.where(better, top + start, row)
    return first, second, row
