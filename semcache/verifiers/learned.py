"""``LearnedVerifier``: a small logistic regression over ``features.FEATURES``, after the rules.

The rules catch a changed number, name of a weekday, negation, swap...; what they let through in
our own labeled pairs is mostly a reworded request about another product, city or person ("refund
request - order A-16859 - tablet" / "Extract the refund request: order A-16859, laptop stand"). The
model scores how likely a pair the rules accepted still means the same, from a dozen cheap numbers
(cosine, shared and unmatched content words, names on each side, word order...), and vetoes below
``min_probability``.

Its weights live in ``learned.json`` next to this file, with the feature list and how they were
made: trained only on the ``train`` split of ``data/pairs/pairs.jsonl`` (our own data), on the
pairs the rule verifier accepts, so that it learns what the rules miss (``training.py``; retrain
with ``python -m semcache.verifiers.training``). Scoring a pair is a dot product in plain Python.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from semcache.verifiers.base import ACCEPT, Verdict
from semcache.verifiers.features import DESCRIPTIONS, FEATURES, pair_features

WEIGHTS_PATH = Path(__file__).with_name("learned.json")
FORMAT = 1


class LearnedVerifier:
    """Veto a candidate when the model's probability that it means the same as the query is
    below ``min_probability`` (by default the value stored with the weights).

    Meant to run after the rules: ``Chain([RuleVerifier(), LearnedVerifier()])``. ``weights`` is
    a path to a weights file or its parsed content; the default is the shipped ``learned.json``.
    """

    name = "learned"

    def __init__(
        self,
        weights: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        min_probability: float | None = None,
    ) -> None:
        model = weights if isinstance(weights, Mapping) else load_weights(weights)
        if list(model.get("features", [])) != list(FEATURES):
            raise ValueError(
                "the weights were trained for other features "
                f"({model.get('features')}); retrain with python -m semcache.verifiers.training"
            )
        self.model = dict(model)
        self._bias = float(model["bias"])
        # Fold the standardization into the weights: one multiply-add per feature at scoring time.
        self._coef = [
            float(w) / float(s) for w, s in zip(model["weights"], model["scale"], strict=True)
        ]
        self._bias -= sum(c * float(m) for c, m in zip(self._coef, model["mean"], strict=True))
        self.min_probability = float(
            model["min_probability"] if min_probability is None else min_probability
        )

    def probability(self, query: str, candidate: str, similarity: float) -> float:
        """The model's probability that ``candidate``'s answer is right for ``query``."""
        return self._probability(pair_features(query, candidate, similarity))

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        values = pair_features(query, candidate, similarity)
        p = self._probability(values)
        if p >= self.min_probability:
            return ACCEPT
        # The reason names the feature that pulled the probability down the most.
        means = [float(m) for m in self.model["mean"]]
        pulls = zip(self._coef, values, means, FEATURES, strict=True)
        worst = min((c * (x - m), n) for c, x, m, n in pulls)[1]
        reason = f"learned: p(same) {p:.2f} < {self.min_probability:g} ({DESCRIPTIONS[worst]})"
        return Verdict(False, reason, self.name)

    def _probability(self, values: list[float]) -> float:
        z = self._bias + sum(c * x for c, x in zip(self._coef, values, strict=True))
        return 1.0 / (1.0 + math.exp(-z)) if z > -500 else 0.0


def load_weights(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read a weights file (the shipped ``learned.json`` by default)."""
    path = Path(path) if path is not None else WEIGHTS_PATH
    try:
        model: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"{path} not found: the learned verifier's weights ship with semcache; "
            "rebuild them with python -m semcache.verifiers.training"
        ) from exc
    if model.get("format") != FORMAT:
        raise ValueError(f"{path}: weights format {model.get('format')!r}, expected {FORMAT}")
    return model
