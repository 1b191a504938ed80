"""Embedders: does semcache's tuned MiniLM pay on sources it was not trained on?

The tuned embedder (``semcache.embedding.tuned``) is the bundled all-MiniLM-L6-v2 with 31,104 bias
and LayerNorm values refitted by ``training/tune_embedder.py`` on data/written, data/pairs (train)
and STS-B (train). Each source is scored with three embedders, all on ONNX int8 as the cache runs
them: the bundled model, the shipped tuned one, and the tuned one trained **without the scored
source** (``training/results/without-*.safetensors``): that column is the fair one, since the
shipped model saw the train splits of three of the sources. Banking77, SICK and MRPC never trained
anything, so for them the shipped model is already the one trained without them.

Sources as in ``sources.py``: Banking77 replayed as an intent classifier (the default pipeline:
rules and answer agreement; hit rate as recall), data/written (all), data/unseen (written in the
styles of real traffic; it trained nothing), data/pairs (test), STS-B
(test), SICK paraphrase vs contradiction (test), MRPC (test); and SICK's train split, because the
training recipe (adding data/pairs' hard negatives) was chosen after seeing the SICK test split
improve: its train split never trained anything and was not looked at for that choice. Every cell gives recall, precision
and wrong answers at the threshold, then the gap to a bare cosine threshold on the **bundled**
model at the same recall (the cache a user would otherwise run), swept in the same run. The last
rows are the tuned model's defaults: its threshold and the rules' substitution gate, each the
bundled model's (0.87, 0.90) mapped by one rule fixed before any test number was read (keep, with
the rules, the bundled model's recall on STS-B's dev split). The second table needs no threshold:
each embedder's cosine alone at fixed recalls.

    python benchmarks/embedders.py [--threshold 0.87] [--shared ../shared/data] [--no-write]
"""

from __future__ import annotations

import datetime
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from machine import describe
from sources import (
    Decide,
    Pair,
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

from semcache.embedding.base import Embedder
from semcache.embedding.onnx_runtime import OnnxEmbedder
from semcache.embedding.resolve import (
    BUNDLED_THRESHOLD,
    TUNED_SUBSTITUTION_BELOW,
    TUNED_THRESHOLD,
)
from semcache.ops import tuning
from semcache.verifiers import RuleVerifier, default_verifier
from semcache.verifiers.agreement import DEFAULT_MARGIN
from semcache.verifiers.rules import SUBSTITUTION_BELOW

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "embedders.md"
LOSO = ROOT / "training" / "results"
BANKING = "Banking77 stream"
SICK_TRAIN = "SICK paraphrase vs contradiction (train; blind check)"
TRAINED_ON = {  # source column -> the training source it shares data with
    "data/written (all; unseen by the rules)": "written",
    "data/pairs (test)": "pairs",
    "STS-B (test, label_bin)": "stsb",
}
RECALLS = (0.3, 0.5, 0.6)


def main(argv: Sequence[str] | None = None) -> None:
    args, shared = arguments(__doc__.splitlines()[0], argv, threshold=BUNDLED_THRESHOLD)
    if not (shared / "banking77.jsonl").exists():
        raise SystemExit(f"public sets not found in {shared}: pass --shared")
    sets = pair_sets(shared)
    # The recipe (adding data/pairs' hard negatives) was chosen after seeing SICK's test split
    # improve, so SICK's train split, which never trained anything, confirms it blind.
    sets[SICK_TRAIN] = [
        (p.a, p.b, int(p.label))
        for p in tuning.load_pairs(shared / "sick.jsonl", split="train")
        if p.kind in ("paraphrase", "contradiction")
    ]
    warm, queries = banking(shared)
    dev = [(p.a, p.b, int(p.label)) for p in tuning.load_pairs(shared / "stsb.jsonl", split="dev")]
    texts = [t for pairs in [*sets.values(), dev] for a, b, _ in pairs for t in (a, b)]
    texts += [t for t, _ in warm + queries]
    embedders: dict[str, Embedder] = {
        "bundled": OnnxEmbedder(quantize=True),
        "tuned": OnnxEmbedder(quantize=True, tuned=True),
    }
    for source in sorted(set(TRAINED_ON.values())):
        embedders[f"without {source}"] = OnnxEmbedder(
            quantize=True, part=LOSO / f"without-{source}.safetensors"
        )
    cache_dir = str(Path(tempfile.gettempdir()) / "semcache-bench-vectors")
    vectors = {
        name: tuning.embed_texts(texts, e, cache_dir=cache_dir) for name, e in embedders.items()
    }

    def held_out(column: str) -> str:
        source = TRAINED_ON.get(column)
        return f"without {source}" if source else "tuned"

    verifier = default_verifier()

    rules, other_instance = decider(verifier), another_instance(verifier)

    t = args.threshold
    base_curve = cosine_curve(warm, queries, vectors["bundled"])

    def stream_cell(name: str, decide: Decide, agreement: bool, at: float) -> str:
        point = stream(
            warm, queries, vectors[name], at, decide,
            margin=DEFAULT_MARGIN if agreement else None, instance=other_instance,
        )  # fmt: skip
        return cell(point, curve_at(base_curve, point.recall))

    sims = {
        name: {c: sims_of(pairs, vectors[name]) for c, pairs in sets.items()} for name in embedders
    }

    def pair_cell(name: str, column: str, decide: Decide, at: float) -> str:
        pairs = sets[column]
        point = pair_point(pairs, sims[name][column], at, decide)
        return cell(point, cosine_at(pairs, sims["bundled"][column], point.recall))

    # The tuned model scores pairs higher, so at 0.87 it serves more. Its operating point, fixed
    # by a rule before any test number was read: the threshold at which it keeps the recall the
    # bundled model has at 0.87 on STS-B's dev split (which trained nothing), both with the rules.
    # The rows run the shipped constants; the rule is re-applied here to show where it lands now.
    rule_threshold = recall_matched(dev, vectors["bundled"], vectors["tuned"], rules, t)
    # The rules' other similarity constant, the substitution check's gate, mapped by the same rule.
    rule_gate = recall_matched(dev, vectors["bundled"], vectors["tuned"], rules, SUBSTITUTION_BELOW)
    tuned_t, gate = TUNED_THRESHOLD, TUNED_SUBSTITUTION_BELOW
    gated_rules = decider(RuleVerifier(substitution_below=gate))

    columns = [BANKING, *sets]
    rows: list[tuple[str, str | None, Decide | None, float]] = [
        ("bundled MiniLM, cosine alone", "bundled", None, t),
        ("bundled MiniLM, the rules (+ agreement on the stream)", "bundled", rules, t),
        ("tuned (shipped), cosine alone", "tuned", None, t),
        ("tuned (shipped), the rules (+ agreement)", "tuned", rules, t),
        ("tuned without the scored source, cosine alone", None, None, t),
        ("tuned without the scored source, the rules (+ agreement)", None, rules, t),
        (f"tuned (shipped), the rules, at {tuned_t:.3f}", "tuned", rules, tuned_t),
        (f"tuned without the scored source, the rules, at {tuned_t:.3f}", None, rules, tuned_t),
        (f"tuned (shipped), the rules with substitution below {gate:.3f}, at {tuned_t:.3f}",
         "tuned", gated_rules, tuned_t),
        (f"tuned without the scored source, the rules with substitution below {gate:.3f}, at "
         f"{tuned_t:.3f}", None, gated_rules, tuned_t),
    ]  # fmt: skip
    lines = [
        "# Embedders: the tuned MiniLM on sources it was not trained on",
        "",
        f"`python benchmarks/embedders.py`, {datetime.date.today()}, threshold {t}, every embedder "
        "on ONNX int8.",
        "",
        *describe(["numpy", "onnxruntime", "faiss-cpu"]),
        "",
        "Each cell: recall (hit rate on the stream), precision (wrong answers) at the threshold, then",
        "the gap to a bare cosine threshold on the bundled model at the same recall. The last four",
        f"rows run the tuned model at its default threshold, {tuned_t:.3f}: the threshold at which "
        f"it kept, with the rules, the recall the bundled model has at {t} on STS-B's dev split (a "
        "rule fixed before any test number was read; the dev split trained nothing). The last two",
        f"also use its default substitution gate, {gate:.3f}: the bundled model's "
        f"{SUBSTITUTION_BELOW} mapped by the same rule. Re-applied to this run's vectors, the rule "
        f"gives {rule_threshold:.3f} and {rule_gate:.3f}.",
        "",
        "| setting | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, name, decide, at in rows:
        cells = []
        for column in columns:
            which = name or held_out(column)
            if column == BANKING:
                cells.append(stream_cell(which, decide or _always, decide is not None, at))
            else:
                cells.append(pair_cell(which, column, decide or _always, at))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Cosine alone at fixed recall (no threshold)",
        "",
        "Precision at the highest threshold reaching each recall (hit rate on the stream).",
        "",
        "| source | recall | bundled | tuned (shipped) | tuned without the source |",
        "|---|---:|---:|---:|---:|",
    ]
    curves = {"bundled": base_curve}
    for name in {"tuned", held_out(BANKING)}:
        curves[name] = cosine_curve(warm, queries, vectors[name])
    for column in columns:
        for recall in RECALLS:
            if column == BANKING:
                got = [curve_at(curves[n], recall) for n in ("bundled", "tuned", held_out(column))]
            else:
                pairs = sets[column]
                got = [
                    cosine_at(pairs, sims[n][column], recall)
                    for n in ("bundled", "tuned", held_out(column))
                ]
            lines.append(f"| {column} | {recall} | " + " | ".join(f"{p:.3f}" for p in got) + " |")
    lines += ["", "Embedder names: " + ", ".join(f"{k} = `{e.name}`" for k, e in embedders.items())]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")


def recall_matched(
    dev: Sequence[Pair],
    bundled: dict[str, np.ndarray],
    other: dict[str, np.ndarray],
    rules: Decide,
    t: float,
) -> float:
    """The lowest threshold (steps of 0.001) at which the ``other`` model with the rules reaches
    no more recall on ``dev`` than the bundled model with the rules reaches at ``t``: how a
    similarity constant set on the bundled model's scale carries to another model's."""
    target = pair_point(dev, sims_of(dev, bundled), t, rules).recall
    sims = sims_of(dev, other)
    for step in range(500, 1000):
        if pair_point(dev, sims, step / 1000, rules).recall <= target:
            return step / 1000
    return 1.0


def _always(a: str, b: str, s: float) -> bool:
    return True


def sims_of(pairs: Sequence[Pair], vectors: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([float(vectors[a] @ vectors[b]) for a, b, _ in pairs])


if __name__ == "__main__":
    main()
