"""The learned stage, judged leaving each source out: does it pay where it was not trained?

``LearnedVerifier`` (a logistic regression over cheap pair features, run after the rules) ships
trained on data/pairs alone. Here the same model is trained, with the same procedure
(``semcache.verifiers.training.train``: pairs the rules accept, class-balanced, sign-constrained,
``min_probability`` keeping 0.99 of held-out-family positives), on every source we may train on
*except* the one it is scored on:

- data/written (ours, 25 domains), the train split of data/pairs (ours), the train split of
  STS-B (CC BY-SA 4.0), and Banking77's train split (CC BY 4.0) as pairs: each of 4,000 training
  queries (seeded) with its 3 nearest other training queries at similarity >= 0.75, labelled same
  when their intents are equal.

Each source is then scored as in ``sources.py`` (its test split, or the whole set for
data/written; Banking77 as the intent-classifier stream on its test split), against a bare cosine
threshold at the same recall or hit rate. SICK and MRPC are never trained on (their licences
allow evaluation only), so their column is the model trained on all four. The shipped model is
shown beside it.

    python benchmarks/learned_sources.py [--threshold 0.87] [--shared ../shared/data] [--no-write]
"""

from __future__ import annotations

import datetime
import random
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe
from sources import (
    ROOT,
    _jsonl,
    another_instance,
    arguments,
    banking,
    cell,
    cosine_at,
    cosine_curve,
    curve_at,
    decider,
    pair_point,
    pair_sets,
    stream,
)

from semcache.embedding import resolve_embedder
from semcache.embedding.resolve import BUNDLED_THRESHOLD
from semcache.ops import tuning
from semcache.verifiers import Chain, LearnedVerifier, default_verifier
from semcache.verifiers.agreement import DEFAULT_MARGIN
from semcache.verifiers.base import Verifier
from semcache.verifiers.training import train

RESULTS = ROOT / "benchmarks" / "results" / "learned_sources.md"
NEIGHBOURS_OF = 4000  # Banking77 training queries that contribute pairs
NEIGHBOURS = 3
PAIR_FLOOR = 0.75  # pairs below this similarity never reach a verifier at sane thresholds
SEED = 0

# Which training source each scored source leaves out (None: it is never trained on).
LEAVES_OUT: dict[str, str | None] = {
    "data/written (all; unseen by the rules)": "data/written",
    "data/unseen (trained nothing)": None,
    "data/pairs (test)": "data/pairs (train)",
    "STS-B (test, label_bin)": "STS-B (train)",
    "SICK paraphrase vs contradiction (test)": None,
    "MRPC (test)": None,
}

Row = dict[str, Any]


def labeled_sources(shared: Path) -> dict[str, list[Row]]:
    """Labeled rows (a, b, label, family) of the sources the learned stage may train on that
    come as pairs; Banking77's are made from its queries once they are embedded."""
    written = sorted((ROOT / "data" / "written").glob("*.jsonl"))
    return {
        "data/written": [
            {"a": r["a"], "b": r["b"], "label": int(r["label"]), "family": r["group"]}
            for f in written
            for r in _jsonl(f)
        ],
        "data/pairs (train)": [
            {"a": p.a, "b": p.b, "label": int(p.label), "family": f"pairs/{i // 25}"}
            for i, p in enumerate(tuning.load_pairs(ROOT / "data/pairs/pairs.jsonl", split="train"))
        ],
        "STS-B (train)": [
            {"a": p.a, "b": p.b, "label": int(p.label), "family": f"stsb/{i % 20}"}
            for i, p in enumerate(tuning.load_pairs(shared / "stsb.jsonl", split="train"))
        ],
    }


def banking_train(shared: Path) -> list[tuple[str, str]]:
    """Banking77's training queries as (text, intent)."""
    rows = _jsonl(shared / "banking77.jsonl")
    return [(str(r["text"]), str(r["label"])) for r in rows if r["split"] == "train"]


def banking_pairs(train: Sequence[tuple[str, str]], vectors: Mapping[str, np.ndarray]) -> list[Row]:
    texts = [t for t, _ in train]
    labels = [label for _, label in train]
    matrix = np.stack([vectors[t] for t in texts])
    order = list(range(len(texts)))
    random.Random(SEED).shuffle(order)
    pairs = []
    for i in order[:NEIGHBOURS_OF]:
        sims = matrix @ matrix[i]
        sims[i] = -1.0
        for j in np.argsort(-sims)[:NEIGHBOURS]:
            if sims[j] >= PAIR_FLOOR:
                same = int(labels[i] == labels[int(j)])
                pairs.append(
                    {"a": texts[i], "b": texts[int(j)], "label": same, "family": labels[i]}
                )
    return pairs


def fit_without(
    sources: Mapping[str, list[Row]], vectors: Mapping[str, np.ndarray], left_out: str | None
) -> dict[str, Any]:
    kept = [
        (r, s)
        for name, source in sources.items()
        if name != left_out
        for r in source
        if (s := float(vectors[r["a"]] @ vectors[r["b"]])) >= PAIR_FLOOR
    ]
    return train([r for r, _ in kept], [s for _, s in kept])


def main(argv: Sequence[str] | None = None) -> None:
    args, shared = arguments(__doc__.splitlines()[0], argv, threshold=BUNDLED_THRESHOLD)
    if not (shared / "banking77.jsonl").exists():
        print(f"public sets not found in {shared}: nothing to measure")
        return
    embedder = resolve_embedder("bundled")  # the committed results' model, at its threshold
    sets = pair_sets(shared)
    warm, queries = banking(shared)
    sources = labeled_sources(shared)
    bank = banking_train(shared)
    texts = [t for pairs in sets.values() for a, b, _ in pairs for t in (a, b)]
    texts += [t for rows in sources.values() for r in rows for t in (r["a"], r["b"])]
    texts += [t for t, _ in warm + queries + bank]
    cache_dir = str(Path(tempfile.gettempdir()) / "semcache-bench-vectors")
    vectors = tuning.embed_texts(texts, embedder, cache_dir=cache_dir)
    sources["Banking77 (train)"] = banking_pairs(bank, vectors)
    rules = default_verifier()
    models = {left: fit_without(sources, vectors, left) for left in [None, *sources]}
    shipped = Chain([rules, LearnedVerifier()])

    def loso(left: str | None) -> Verifier:
        return Chain([rules, LearnedVerifier(models[left])])

    t = args.threshold
    lines = [
        "# The learned stage, trained leaving the scored source out",
        "",
        f"`python benchmarks/learned_sources.py`, {datetime.date.today()}, threshold {t}, "
        f"embedder {embedder.name} ({getattr(embedder, 'backend', 'torch')}).",
        "",
        *describe(["numpy", "onnxruntime"]),
        "",
        "Training rows (pairs at similarity >= 0.75 the rules accept are what the model sees): "
        + ", ".join(f"{name} {len(rows):,}" for name, rows in sources.items())
        + ".",
        "",
        "Each cell: recall (or hit rate), precision (wrong) at the threshold, then the gap to cosine",
        "alone's precision at the same recall (cosine swept in the same run).",
        "",
        "| setting | " + " | ".join(["Banking77 stream (+ answer agreement)", *sets]) + " |",
        "|---|" + "---|" * (len(sets) + 1),
    ]
    curve = cosine_curve(warm, queries, vectors)
    sims = {
        name: np.array([float(vectors[a] @ vectors[b]) for a, b, _ in pairs])
        for name, pairs in sets.items()
    }
    settings: list[tuple[str, Any]] = [
        ("rules (default)", lambda _source: rules),
        ("rules + learned, shipped (trained on data/pairs only)", lambda _source: shipped),
        ("rules + learned, trained without the scored source", lambda left: loso(left)),
    ]
    for name, make in settings:
        verifier = make("Banking77 (train)")
        point = stream(
            warm, queries, vectors, t, decider(verifier), margin=DEFAULT_MARGIN,
            instance=another_instance(verifier),
        )  # fmt: skip
        cells = [cell(point, curve_at(curve, point.recall))]
        for set_name, pairs in sets.items():
            verifier = make(LEAVES_OUT[set_name])
            point = pair_point(pairs, sims[set_name], t, decider(verifier))
            cells.append(cell(point, cosine_at(pairs, sims[set_name], point.recall)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "min_probability chosen by each fit: "
        + ", ".join(
            f"without {left or 'nothing'} {model['min_probability']:g}"
            for left, model in models.items()
        )
        + ".",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
