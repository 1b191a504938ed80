"""Built-in verifiers. ``default_verifier()`` is what ``SemanticCache`` uses unless told otherwise.

* ``RuleVerifier``: offline, pure Python, ~0.1 ms per pair. Vetoes a candidate whose text differs
  from the query in a number, an identifier, a date, a unit, a negation, an antonym, a question
  word, the order of two entities, who does what to whom (subject and object of the same verb),
  or (in otherwise identical text) one content word. The default.
* ``LearnedVerifier``: a logistic regression over a dozen cheap features (cosine, shared and
  unmatched content words, names on each side, word order), trained on our own ``data/pairs``
  train split; weights and provenance in ``learned.json``. Runs after the rules:
  ``Chain([RuleVerifier(), LearnedVerifier()])``. Not in the default (see ``default_verifier``).
* ``CrossEncoderVerifier``: wraps a sentence-transformers ``CrossEncoder`` you already have; add
  it after the rules with ``Chain([RuleVerifier(), CrossEncoderVerifier(model)])``.
"""

from __future__ import annotations

from semcache.verifiers.base import ACCEPT, AcceptAll, Chain, Verdict, Verifier
from semcache.verifiers.crossencoder import CrossEncoderVerifier
from semcache.verifiers.learned import LearnedVerifier
from semcache.verifiers.rules import CHECKS, DEFAULT_CHECKS, SUBSTITUTION_BELOW, RuleVerifier

__all__ = [
    "ACCEPT",
    "CHECKS",
    "DEFAULT_CHECKS",
    "AcceptAll",
    "Chain",
    "CrossEncoderVerifier",
    "LearnedVerifier",
    "RuleVerifier",
    "Verdict",
    "Verifier",
    "default_verifier",
]


def default_verifier(*, substitution_below: float = SUBSTITUTION_BELOW) -> Verifier:
    """The verifier a new ``SemanticCache`` uses by default: the rule checks in ``DEFAULT_CHECKS``,
    the substitution check gated at ``substitution_below`` (the bundled model's gate by default;
    a cache passes its model's, ``semcache.lifecycle.default_verifier_for``).

    The rules were written from the failure kinds in ``data/pairs`` and the public sets' train
    splits, and are scored on held-out splits in ``benchmarks/results/quality.md``. The learned
    stage is not added: at the default threshold it moves no held-out precision by more than
    0.001 and costs recall (data/pairs test 0.586 -> 0.579, MRPC 0.173 -> 0.165), and on the
    demo's request stream it prevents no wrong hit. Its use is a lower threshold for requests
    like ours: with it, data/pairs test keeps precision 0.993 down to threshold 0.80.
    """
    return RuleVerifier(substitution_below=substitution_below)
