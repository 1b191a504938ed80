"""Built-in verifiers. ``default_verifier()`` is what ``SemanticCache`` uses unless told otherwise.

* ``RuleVerifier``: offline, pure Python, ~0.1 ms per pair. Vetoes a candidate whose text differs
  from the query in a number, an identifier, a date, a unit, a negation, an antonym, a question
  word, the order of two entities, or (in otherwise identical text) one content word. The default.
* ``CrossEncoderVerifier``: wraps a sentence-transformers ``CrossEncoder`` you already have; add
  it after the rules with ``Chain([RuleVerifier(), CrossEncoderVerifier(model)])``.
"""

from __future__ import annotations

from semcache.verifiers.crossencoder import CrossEncoderVerifier
from semcache.verifiers.rules import CHECKS, DEFAULT_CHECKS, RuleVerifier
from semcache.verify import Verifier

__all__ = ["CHECKS", "DEFAULT_CHECKS", "CrossEncoderVerifier", "RuleVerifier", "default_verifier"]


def default_verifier() -> Verifier:
    """The verifier a new ``SemanticCache`` uses by default: the rule checks in ``DEFAULT_CHECKS``.

    No learned model: the rules were written from the failure kinds in ``data/pairs`` and the
    public sets' train splits, and are scored on held-out splits in
    ``benchmarks/results/quality.md``.
    """
    return RuleVerifier()
