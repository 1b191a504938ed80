"""Training the learned verifier (``learned.py``) on our labeled pairs, reproducibly.

    python -m semcache.verifiers.training            # rewrite semcache/verifiers/learned.json
    python -m semcache.verifiers.training --check    # retrain and compare with the file

Only the rows of the ``train`` split of ``data/pairs/pairs.jsonl`` are used (whole request
families; test rows are dropped on load), and of them only the pairs the default rules accept: the
model runs after them and learns what they miss. Cosine similarities come from ``SentenceTransformerEmbedder``
(the bundled all-MiniLM-L6-v2). The fit is deterministic: Newton steps from zero, a fixed count,
similarities rounded to six decimals. numpy is needed here only, not to score a pair.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semcache.verifiers.features import FEATURES, pair_features
from semcache.verifiers.learned import FORMAT, WEIGHTS_PATH, load_weights

if TYPE_CHECKING:
    import numpy as np

    from semcache.embedding.base import Embedder

# Prior knowledge the fit must respect: a difference never makes "same meaning" more likely
# (-1: weight <= 0), a similarity never makes it less likely (+1: weight >= 0). A feature whose
# fitted weight has the wrong sign is dropped and the model refitted: with 65 negatives, an
# unconstrained fit learns accidents of our templates (added clauses looked like rewordings).
SIGNS: dict[str, int] = {
    "cosine": 1,
    "content_overlap": 1,
    "unmatched_min": -1,
    "unmatched_max": -1,
    "unmatched_share": -1,
    "names_replaced": -1,
    "names_unmatched_any": -1,
    "length_ratio": 1,
    "order_discordance": -1,
    "clause_words_added": -1,
}
L2 = 1.0  # ridge penalty on the standardized weights (not on the bias)
NEWTON_STEPS = 30
KEEP_POSITIVES = 0.99  # min_probability keeps this share of held-out-family positives ...
CV_FLOOR = 0.80  # ... among pairs at or above this similarity (lower ones miss on cosine anyway)
TAUS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def fit(
    x: np.ndarray, y: np.ndarray, *, l2: float = L2, signs: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Class-balanced, L2-penalized logistic regression by Newton's method, with sign
    constraints. Returns (mean, scale, weights on standardized features, bias)."""
    import numpy as np

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z_all = (x - mean) / scale
    n_pos = float(y.sum())
    balance = np.where(y == 1, len(y) / (2 * n_pos), len(y) / (2 * (len(y) - n_pos)))
    active = list(range(x.shape[1]))
    while True:
        z = np.hstack([np.ones((len(x), 1)), z_all[:, active]])
        w = np.zeros(z.shape[1])
        penalty = l2 * np.eye(z.shape[1])
        penalty[0, 0] = 0.0
        for _ in range(NEWTON_STEPS):
            p = 1.0 / (1.0 + np.exp(-(z @ w)))
            gradient = z.T @ (balance * (p - y)) + penalty @ w
            hessian = z.T @ (z * (balance * p * (1 - p))[:, None]) + penalty
            w = w - np.linalg.solve(hessian, gradient)
        wrong = [k for k, i in enumerate(active) if signs and w[k + 1] * signs[i] < 0]
        if not wrong:
            break
        active.pop(max(wrong, key=lambda k: abs(w[k + 1])))
    weights = np.zeros(x.shape[1])
    for k, i in enumerate(active):
        weights[i] = w[k + 1]
    return mean, scale, weights, float(w[0])


def _predict(model: tuple[np.ndarray, np.ndarray, np.ndarray, float], x: np.ndarray) -> np.ndarray:
    import numpy as np

    mean, scale, weights, bias = model
    result: np.ndarray = 1.0 / (1.0 + np.exp(-(((x - mean) / scale) @ weights + bias)))
    return result


def train(
    rows: Sequence[Mapping[str, Any]], similarities: Sequence[float], verifier: Any = None
) -> dict[str, Any]:
    """Fit the model on labeled rows (``a``, ``b``, ``label``, ``family``) with their cosine
    similarities: only the rows ``verifier`` (default: the default rules) accepts, as the stage
    runs after it. Chooses ``min_probability`` by leave-one-family-out cross-validation."""
    import numpy as np

    if verifier is None:
        from semcache.verifiers.rules import RuleVerifier

        verifier = RuleVerifier()
    kept = [
        (row, round(float(s), 6))
        for row, s in zip(rows, similarities, strict=True)
        if verifier.verify(row["a"], row["b"], float(s)).accept
    ]
    x = np.array([pair_features(r["a"], r["b"], s) for r, s in kept], dtype=np.float64)
    y = np.array([int(r["label"]) for r, _ in kept], dtype=np.float64)
    sims = np.array([s for _, s in kept])
    families = np.array([r.get("family", "") for r, _ in kept])
    signs = [SIGNS[name] for name in FEATURES]

    held_out = np.zeros(len(y))
    for family in sorted(set(families.tolist())):
        test = families == family
        held_out[test] = _predict(fit(x[~test], y[~test], signs=signs), x[test])

    def cv(tau: float, floor: float) -> dict[str, float]:
        sel = sims >= floor
        pos, neg = sel & (y == 1), sel & (y == 0)
        return {
            "positives": int(pos.sum()),
            "positives_kept": round(float((held_out[pos] >= tau).mean()), 4),
            "negatives": int(neg.sum()),
            "negatives_vetoed": round(float((held_out[neg] < tau).mean()), 4) if neg.any() else 0,
        }

    tau = max(
        (t for t in TAUS if cv(t, CV_FLOOR)["positives_kept"] >= KEEP_POSITIVES), default=TAUS[0]
    )
    mean, scale, weights, bias = fit(x, y, signs=signs)
    return {
        "format": FORMAT,
        "model": "logistic regression (class-balanced, L2, sign-constrained), numpy Newton steps",
        "features": list(FEATURES),
        "mean": [round(float(v), 6) for v in mean],
        "scale": [round(float(v), 6) for v in scale],
        "weights": [round(float(v), 6) for v in weights],
        "bias": round(bias, 6),
        "min_probability": tau,
        "training": {
            "rows": len(y),
            "positives": int(y.sum()),
            "negatives": int(len(y) - y.sum()),
            "selection": f"pairs the {getattr(verifier, 'name', 'given')} verifier accepts",
            "l2": L2,
            "signs": SIGNS,
            "min_probability_rule": (
                f"highest of {TAUS[0]}..{TAUS[-1]} keeping >= {KEEP_POSITIVES} of positives "
                f"with similarity >= {CV_FLOOR}, leave-one-family-out"
            ),
            "cross_validation": {
                "method": "leave one family out, same fit, at min_probability",
                "all": cv(tau, -1.0),
                f"similarity >= {CV_FLOOR}": cv(tau, CV_FLOOR),
                "similarity >= 0.85": cv(tau, 0.85),
            },
        },
    }


def _pairs_path() -> Path:
    return Path(__file__).resolve().parent.parent.parent / "data" / "pairs" / "pairs.jsonl"


def build(
    pairs: str | os.PathLike[str] | None = None, embedder: Embedder | None = None
) -> dict[str, Any]:
    """Train on the ``train`` split of ``pairs`` (our ``data/pairs/pairs.jsonl``) and return the
    weights file's content, provenance included."""
    path = Path(pairs) if pairs is not None else _pairs_path()
    raw = path.read_bytes()
    rows = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("split") == "train"]
    if embedder is None:
        from semcache.embedding.torch_runtime import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder()
    texts = sorted({t for r in rows for t in (r["a"], r["b"])})
    vectors = dict(zip(texts, embedder.embed(texts), strict=True))
    similarities = [float(vectors[r["a"]] @ vectors[r["b"]]) for r in rows]
    model = train(rows, similarities)
    model["training"] = {
        "data": _shown(path),
        "data_sha256": hashlib.sha256(raw).hexdigest(),
        "split": "train (whole request families; rows of the test split are skipped on load)",
        "rules_sha256": _rules_fingerprint(),
        "pairs_in_split": len(rows),
        "embedder": f"{embedder.name} via {type(embedder).__name__}",
        "date": datetime.date.today().isoformat(),
        "command": "python -m semcache.verifiers.training",
        **model["training"],
    }
    return model


def _shown(path: Path) -> str:
    root = _pairs_path().parent.parent.parent
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _rules_fingerprint() -> str:
    """The rule code the training pairs were filtered with: retrain when it changes."""
    digest = hashlib.sha256()
    for name in ("text.py", "lexicon.py", "structure.py", "rules.py", "features.py"):
        digest.update((Path(__file__).with_name(name)).read_bytes())
    return digest.hexdigest()


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal models, up to float noise far below what changes a verdict."""

    def close(x: Any, y: Any) -> bool:
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(close(u, v) for u, v in zip(x, y, strict=True))
        if isinstance(x, float | int) and isinstance(y, float | int):
            return math.isclose(x, y, abs_tol=1e-4)
        return bool(x == y)

    keys = ("features", "mean", "scale", "weights", "bias", "min_probability")
    return all(close(a.get(k), b.get(k)) for k in keys)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the learned verifier on data/pairs train.")
    parser.add_argument("--pairs", help="labeled pairs JSONL (default: data/pairs/pairs.jsonl)")
    parser.add_argument("--out", default=str(WEIGHTS_PATH), help="weights file to write")
    parser.add_argument("--check", action="store_true", help="retrain and compare with --out")
    args = parser.parse_args(argv)
    model = build(args.pairs)
    if args.check:
        same = _same(model, load_weights(args.out))
        print("weights reproduce" if same else "weights differ from the file: retrain")
        return 0 if same else 1
    Path(args.out).write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(model["training"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
