"""Sources: does each verification decision pay on traffic it was not written for?

A verifier earns its place only if, on a source nobody fitted it to, it serves more precisely than a
bare cosine threshold that serves as often. So every setting here is compared with cosine alone
*at the same recall (or hit rate)*, read off a cosine sweep on the same data in the same run:
precision above cosine's at equal recall is a gain, below it a loss, whatever the raw numbers say.

Sources, each read in place (public sets from ../shared/data, never copied):

- **Banking77 as an instructor intent classifier** (real banking-assistant queries, CC BY 4.0): the
  cache is warmed with the first 10 training queries of each of the 77 intents (file order); then
  every test query (3,080) looks up its 4 nearest cached queries with similarity >= the threshold,
  best first, and is served the first one the verifier accepts; a miss is answered by the
  "provider" (the query's own label) and stored, as the cache does. A hit is right when the served
  intent is the query's own. No rule or weight in semcache was fitted to Banking77.
- **data/written** (pairs we wrote for semcache in 25 domains; see its README): none of the rules
  were written against it.
- **data/unseen** (pairs we wrote in the styles of real traffic: Q&A-site questions, FAQ bots,
  assistant intents, multi-sentence tickets, commands; see its README): nothing was fitted to it,
  neither a rule nor any weight semcache ships.
- The test splits of STS-B (label_bin), SICK (paraphrase vs contradiction), MRPC and data/pairs. The
  rules were developed on the train splits of these sets, so they are in-distribution for them.

Settings: the default verifier (the rules), the rules without serving a farther candidate after
the nearest was vetoed, and each rule check alone. Pair sets score each pair at the default
threshold; the stream runs the cache's own candidate order.

    python benchmarks/sources.py [--threshold 0.87] [--shared ../shared/data] [--no-write]
"""

from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe
from pydantic import BaseModel

from semcache import DEFAULT_THRESHOLD, SemanticCache
from semcache.embedding import resolve_embedder
from semcache.embedding.resolve import substitution_gate
from semcache.lifecycle import default_verifier_for
from semcache.ops import tuning
from semcache.verifiers import RuleVerifier
from semcache.verifiers.agreement import ANOTHER_INSTANCE, DEFAULT_MARGIN
from semcache.verifiers.base import Verifier
from semcache.verifiers.rules import CHECKS, DEFAULT_CHECKS, SUBSTITUTION_BELOW

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "sources.md"
WARM_PER_INTENT = 10
CANDIDATES = 4  # as the cache's pipeline examines
COSINE_SWEEP = tuple(round(0.70 + 0.005 * i, 3) for i in range(59))  # 0.70 .. 0.99

Pair = tuple[str, str, int]
Decide = Callable[[str, str, float], bool]


@dataclass(frozen=True)
class Point:
    """Recall (or hit rate), precision and wrong answers of one setting on one source."""

    recall: float
    precision: float
    wrong: int


# -- sources -----------------------------------------------------------------------------------


UNSEEN = "data/unseen (trained nothing)"


def _jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _folder_pairs(folder: str) -> list[Pair]:
    """Every pair of the JSON-lines files in ``data/<folder>``, in file-name order."""
    files = sorted((ROOT / "data" / folder).glob("*.jsonl"))
    return [(str(r["a"]), str(r["b"]), int(r["label"])) for f in files for r in _jsonl(f)]


def pair_sets(shared: Path | None) -> dict[str, list[Pair]]:
    sets: dict[str, list[Pair]] = {}
    sets["data/written (all; unseen by the rules)"] = _folder_pairs("written")
    sets[UNSEEN] = _folder_pairs("unseen")
    sets["data/pairs (test)"] = [
        (p.a, p.b, int(p.label))
        for p in tuning.load_pairs(ROOT / "data" / "pairs" / "pairs.jsonl", split="test")
    ]
    if shared is None:
        return sets
    sets["STS-B (test, label_bin)"] = [
        (p.a, p.b, int(p.label)) for p in tuning.load_pairs(shared / "stsb.jsonl", split="test")
    ]
    sets["SICK paraphrase vs contradiction (test)"] = [
        (p.a, p.b, int(p.label))
        for p in tuning.load_pairs(shared / "sick.jsonl", split="test")
        if p.kind in ("paraphrase", "contradiction")
    ]
    sets["MRPC (test)"] = [
        (p.a, p.b, int(p.label)) for p in tuning.load_pairs(shared / "mrpc.jsonl", split="test")
    ]
    return sets


def banking(shared: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(warm, queries) as (text, intent): 10 training queries per intent, then the test split."""
    rows = _jsonl(shared / "banking77.jsonl")
    seen: dict[str, int] = {}
    warm = []
    for r in rows:
        label = str(r["label"])
        if r["split"] == "train" and seen.get(label, 0) < WARM_PER_INTENT:
            warm.append((str(r["text"]), label))
            seen[label] = seen.get(label, 0) + 1
    queries = [(str(r["text"]), str(r["label"])) for r in rows if r["split"] == "test"]
    return warm, queries


# -- measuring ---------------------------------------------------------------------------------


def pair_point(pairs: Sequence[Pair], sims: np.ndarray, threshold: float, decide: Decide) -> Point:
    labels = np.array([y for _, _, y in pairs])
    served = np.array(
        [
            s >= threshold and decide(a, b, float(s))
            for (a, b, _), s in zip(pairs, sims, strict=True)
        ],
        dtype=bool,
    )
    right = int(labels[served].sum())
    hits = int(served.sum())
    return Point(right / max(int(labels.sum()), 1), right / hits if hits else 1.0, hits - right)


def cosine_at(pairs: Sequence[Pair], sims: np.ndarray, recall: float) -> float:
    """Cosine alone's precision at the lowest threshold reaching ``recall`` (pairs ranked by
    similarity)."""
    labels = np.array([y for _, _, y in pairs])[np.argsort(-sims, kind="stable")]
    tp = np.cumsum(labels)
    k = int(np.searchsorted(tp, recall * labels.sum()))
    k = min(k, len(labels) - 1)
    return float(tp[k] / (k + 1))


def stream(
    warm: Sequence[tuple[str, str]],
    queries: Sequence[tuple[str, str]],
    vectors: dict[str, np.ndarray],
    threshold: float,
    decide: Decide,
    after_veto: bool = True,
    margin: float | None = None,
    instance: Decide = lambda *_: False,
) -> Point:
    """The intent-classifier cache (module docstring); recall here is the hit rate. With
    ``margin``, a candidate is not served when another one at or above the threshold and at most
    ``margin`` less similar holds another intent, unless ``instance`` says that one is another
    instance of the request, as the cache's answer agreement does."""
    texts = [t for t, _ in warm]
    labels = [label for _, label in warm]
    matrix = np.zeros((len(warm) + len(queries), len(next(iter(vectors.values())))), np.float32)
    for i, text in enumerate(texts):
        matrix[i] = vectors[text]
    n = len(texts)
    hits = right = 0
    for text, label in queries:
        vector = vectors[text]
        sims = matrix[:n] @ vector
        served = None
        eligible = [int(j) for j in np.argsort(-sims)[:CANDIDATES] if sims[j] >= threshold]
        for j in eligible:
            if decide(text, texts[j], float(sims[j])):
                served = j
                break
            if not after_veto:
                break
        if served is not None and margin is not None:
            floor = sims[served] - margin
            if any(
                labels[j] != labels[served]
                and sims[j] >= floor
                and not instance(text, texts[j], float(sims[j]))
                for j in eligible
            ):
                served = None
        if served is None:
            texts.append(text)
            labels.append(label)
            matrix[n] = vector
            n += 1
        else:
            hits += 1
            right += labels[served] == label
    return Point(hits / len(queries), right / hits if hits else 1.0, hits - right)


class Intent(BaseModel):
    """The classifier's structured answer."""

    intent: str


def _classify(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Classify the banking customer's query into its intent."},
        {"role": "user", "content": text},
    ]


def through_cache(
    warm: Sequence[tuple[str, str]], queries: Sequence[tuple[str, str]], **kwargs: Any
) -> Point:
    """The same stream through a real ``SemanticCache`` (its pipeline, verifier, agreement and
    index) with the default embedder: warmed with ``store_many``, each query a ``lookup`` and, on
    a miss, a ``store`` of the query's own intent."""
    hits = right = 0
    with (
        tempfile.TemporaryDirectory() as folder,
        SemanticCache(Path(folder) / "bench.db", **kwargs) as cache,
    ):
        items = [(_classify(text), Intent(intent=label)) for text, label in warm]
        cache.store_many(items, Intent, model="classifier")
        for text, label in queries:
            hit = cache.lookup(_classify(text), Intent, model="classifier")
            if hit is None:
                cache.store(_classify(text), Intent, Intent(intent=label), model="classifier")
            else:
                hits += 1
                right += hit.value.intent == label
    return Point(hits / len(queries), right / hits if hits else 1.0, hits - right)


def cosine_curve(
    warm: Sequence[tuple[str, str]],
    queries: Sequence[tuple[str, str]],
    vectors: dict[str, np.ndarray],
) -> list[Point]:
    return [stream(warm, queries, vectors, t, lambda *_: True) for t in COSINE_SWEEP]


def curve_at(curve: Sequence[Point], hit_rate: float) -> float:
    """Cosine's precision at the highest threshold that still serves ``hit_rate``."""
    reaching = [p for p in curve if p.recall >= hit_rate]
    return min(reaching, key=lambda p: p.recall).precision if reaching else float("nan")


# -- report --------------------------------------------------------------------------------------


def verdict(precision: float, cosine: float) -> str:
    if np.isnan(cosine):
        return "—"
    gap = precision - cosine
    return f"{gap:+.3f} " + ("pays" if gap > 0.0005 else "costs" if gap < -0.0005 else "even")


def cell(point: Point, cosine: float) -> str:
    """A result cell: recall, precision (wrong answers), then the gap to ``cosine``."""
    return (
        f"R {point.recall:.3f} P {point.precision:.3f} ({point.wrong}) "
        f"{verdict(point.precision, cosine)}"
    )


def settings(model_name: str) -> dict[str, Decide]:
    """The default verifier of a cache embedding with ``model_name``, then each check alone."""
    rules = default_verifier_for(model_name)
    gate = substitution_gate(model_name) or SUBSTITUTION_BELOW
    out: dict[str, Decide] = {"rules (default)": decider(rules)}
    for check in (*DEFAULT_CHECKS, *(c for c in CHECKS if c not in DEFAULT_CHECKS)):
        if check == "substitution":
            below = f"below {gate:.3f} (the default)"
            out[f"check: substitution {below}"] = decider(
                RuleVerifier(checks=(check,), substitution_below=gate)
            )
            every = RuleVerifier(checks=(check,), substitution_below=None)
            out["check: substitution on every candidate"] = decider(every)
            continue
        out[f"check: {check}"] = decider(RuleVerifier(checks=(check,)))
    return out


def decider(verifier: Verifier) -> Decide:
    """``verifier``'s accept or veto as a ``Decide``."""
    return lambda a, b, s: verifier.verify(a, b, s).accept


def another_instance(verifier: Verifier) -> Decide:
    """Whether ``verifier`` vetoes a pair as another instance of the request (another order
    number, date, ...): such a rival does not count against a candidate in answer agreement."""

    def other(a: str, b: str, s: float) -> bool:
        verdict = verifier.verify(a, b, s)
        return not verdict.accept and verdict.stage in ANOTHER_INSTANCE

    return other


def arguments(
    description: str, argv: Sequence[str] | None, threshold: float = DEFAULT_THRESHOLD
) -> tuple[argparse.Namespace, Path]:
    """The options every sources benchmark takes, and the folder of the public sets."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--threshold", type=float, default=threshold)
    parser.add_argument("--shared", default=None, help="folder with the public sets")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    return args, Path(args.shared) if args.shared else ROOT.parent / "shared" / "data"


def main(argv: Sequence[str] | None = None) -> None:
    args, shared = arguments(__doc__.splitlines()[0], argv)
    shared_or_none = shared if (shared / "banking77.jsonl").exists() else None
    if shared_or_none is None:
        print(f"public sets not found in {shared}: only our own data is measured")
    embedder = resolve_embedder(None)
    cache_dir = str(Path(tempfile.gettempdir()) / "semcache-bench-vectors")
    sets = pair_sets(shared_or_none)
    all_texts = [t for pairs in sets.values() for a, b, _ in pairs for t in (a, b)]
    warm: list[tuple[str, str]] = []
    queries: list[tuple[str, str]] = []
    if shared_or_none is not None:
        warm, queries = banking(shared_or_none)
        all_texts += [t for t, _ in warm + queries]
    vectors = tuning.embed_texts(all_texts, embedder, cache_dir=cache_dir)
    decisions = settings(embedder.name)
    t = args.threshold
    lines = [
        "# Sources: does each verifier decision pay where it was not fitted?",
        "",
        f"`python benchmarks/sources.py`, {datetime.date.today()}, threshold {t}, "
        f"embedder {embedder.name} ({getattr(embedder, 'backend', 'torch')}).",
        "",
        *describe(["numpy", "onnxruntime", "faiss-cpu"]),
        "",
        "Each cell: precision (wrong answers) at the recall or hit rate reached, then the gap to",
        "cosine alone's precision at that same recall or hit rate (cosine swept in the same run).",
        "",
    ]
    if queries:
        curve = cosine_curve(warm, queries, vectors)
        lines += [
            "## Banking77 as an intent classifier (3,080 test queries, 770 warm entries)",
            "",
            "| setting | hit rate | precision | wrong | vs cosine at the same hit rate |",
            "|---|---:|---:|---:|---|",
        ]
        base = stream(warm, queries, vectors, t, lambda *_: True)
        lines.append(_stream_row("cosine alone", base, curve))
        rules = decisions["rules (default)"]
        verifier = default_verifier_for(embedder.name)

        def vetoed(a: str, b: str, s: float) -> bool:
            return not verifier.verify(a, b, s).accept

        other_instance = another_instance(verifier)
        margin = DEFAULT_MARGIN
        for name, point in [
            (
                f"cosine + answer agreement ({margin})",
                stream(warm, queries, vectors, t, lambda *_: True, margin=margin),
            ),
            ("rules", stream(warm, queries, vectors, t, rules)),
            (
                "rules, no farther candidate after a veto",
                stream(warm, queries, vectors, t, rules, after_veto=False),
            ),
            (
                f"rules + answer agreement ({margin}), every vetoed rival counts",
                stream(warm, queries, vectors, t, rules, margin=margin),
            ),
            (
                f"rules + answer agreement ({margin}), accepted rivals only",
                stream(warm, queries, vectors, t, rules, margin=margin, instance=vetoed),
            ),
            (
                f"rules + answer agreement ({margin}): the default",
                stream(warm, queries, vectors, t, rules, margin=margin, instance=other_instance),
            ),
        ] + [
            (name, stream(warm, queries, vectors, t, d))
            for name, d in decisions.items()
            if name.startswith("check:")
        ]:
            lines.append(_stream_row(name, point, curve))
        lines += [
            "",
            "The same stream through `SemanticCache` itself (default embedder, `store_many` to warm,",
            "`lookup`, `store` on a miss):",
            "",
            "| SemanticCache(...) | hit rate | precision | wrong | vs cosine at the same hit rate |",
            "|---|---:|---:|---:|---|",
        ]
        for name, kwargs in [
            ("defaults", {}),
            ("agreement_margin=None", {"agreement_margin": None}),
            ("verifier=None", {"verifier": None}),
            ("verifier=None, agreement_margin=None", {"verifier": None, "agreement_margin": None}),
        ]:
            point = through_cache(warm, queries, threshold=t, **kwargs)
            lines.append(_stream_row(name, point, curve))
        lines.append("")
    lines += [
        "## Labeled pairs at the threshold",
        "",
        "| setting | " + " | ".join(sets) + " |",
        "|---|" + "---|" * len(sets),
    ]
    sims = {
        name: np.array([float(vectors[a] @ vectors[b]) for a, b, _ in pairs])
        for name, pairs in sets.items()
    }
    for name, decide in [("cosine alone", lambda *_: True), *decisions.items()]:
        cells = []
        for set_name, pairs in sets.items():
            point = pair_point(pairs, sims[set_name], t, decide)
            cosine = cosine_at(pairs, sims[set_name], point.recall)
            cells.append(
                f"R {point.recall:.3f} P {point.precision:.3f} ({point.wrong}) "
                f"{verdict(point.precision, cosine)}"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.write_text(text, encoding="utf-8")


def _stream_row(name: str, point: Point, curve: Sequence[Point]) -> str:
    cosine = curve_at(curve, point.recall)
    return (
        f"| {name} | {point.recall:.3f} | {point.precision:.4f} | {point.wrong} | "
        f"{verdict(point.precision, cosine)} |"
    )


if __name__ == "__main__":
    main()
