"""``CrossEncoderVerifier``: a sentence-transformers ``CrossEncoder`` as a verification stage.

A cross-encoder reads both texts together and scores whether they mean the same, which is what a
bi-encoder's cosine cannot do; it costs a transformer forward pass per candidate (milliseconds on
a CPU), so it belongs after the rules: ``Chain([RuleVerifier(), CrossEncoderVerifier(model)])``.
None ships with semcache; bring one you have (a paraphrase or STS model with one output, or an NLI
model with ``positive_label="entailment"``). sentence-transformers is imported only here, and only
when a verifier is constructed.
"""

from __future__ import annotations

import math
import threading
from typing import Any

from semcache.verifiers.base import ACCEPT, Verdict


class CrossEncoderVerifier:
    """Veto a candidate when the cross-encoder's score for (query, candidate) is below
    ``min_score``.

    ``model_or_name`` is a ``CrossEncoder`` instance or a model name or folder to load one from.
    Models with one output give a score in [0, 1] (their own activation, usually a sigmoid); for
    models with several outputs (NLI), ``positive_label`` names the output that means "same"
    (an index, or a label from the model config such as ``"entailment"``) and the score is its
    softmax probability.
    """

    def __init__(
        self,
        model_or_name: Any,
        *,
        min_score: float = 0.5,
        positive_label: int | str | None = None,
        name: str = "cross-encoder",
    ) -> None:
        if isinstance(model_or_name, str):
            try:
                from sentence_transformers import CrossEncoder
            except ImportError as exc:
                raise ImportError(
                    "CrossEncoderVerifier needs the sentence-transformers package "
                    "(pip install sentence-transformers)"
                ) from exc
            model_or_name = CrossEncoder(model_or_name)
        if not hasattr(model_or_name, "predict"):
            raise TypeError(
                f"expected a sentence-transformers CrossEncoder, got {type(model_or_name).__name__}"
            )
        self.model = model_or_name
        self.min_score = float(min_score)
        self.name = name
        self._label = positive_label
        self._lock = threading.Lock()  # torch modules are not safe to call from many threads

    def score(self, query: str, candidate: str) -> float:
        """The model's score that ``candidate`` may answer ``query`` (higher is closer)."""
        with self._lock:
            output = self.model.predict([(query, candidate)], show_progress_bar=False)
        values = [float(v) for v in _flat(output[0])]
        if len(values) == 1:
            return values[0]
        index = self._index(len(values))
        top = max(values)
        exps = [math.exp(v - top) for v in values]
        return exps[index] / sum(exps)

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        score = self.score(query, candidate)
        if score >= self.min_score:
            return ACCEPT
        return Verdict(False, f"cross-encoder score {score:.3f} < {self.min_score:g}", self.name)

    def _index(self, outputs: int) -> int:
        label = self._label
        if isinstance(label, int) and 0 <= label < outputs:
            return label
        if isinstance(label, str):
            config = getattr(getattr(self.model, "model", None), "config", None)
            names = {
                str(v).lower(): int(k) for k, v in (getattr(config, "id2label", None) or {}).items()
            }
            if label.lower() in names:
                return names[label.lower()]
        raise ValueError(
            f"the cross-encoder has {outputs} outputs: pass positive_label= (an index, or a label "
            "from its config such as 'entailment') to say which one means a match"
        )


def _flat(value: Any) -> list[Any]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value if isinstance(value, list) else [value]
