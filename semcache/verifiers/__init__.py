"""Built-in verifiers. ``default_verifier()`` is what ``SemanticCache`` uses unless told otherwise."""

from __future__ import annotations

from semcache.verify import AcceptAll, Verifier


def default_verifier() -> Verifier:
    """The verifier a new ``SemanticCache`` uses by default."""
    return AcceptAll()
