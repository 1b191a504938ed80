"""The verification stage: a veto between "nearest neighbour above the threshold" and "serve it".

A cosine threshold alone cannot tell "Book a flight from Paris to Rome" from "... Rome to Paris"
(0.999) or order #1234 from #1235 (0.97): the vectors are close, the answers differ. A verifier looks
at the two texts themselves and may veto the hit. Verifiers are pluggable: anything with a ``name``
and a ``verify(query, candidate, similarity) -> Verdict`` method; ``Chain`` runs several in order and
the first veto wins. The built-in default lives in ``semcache.verifiers``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Verdict:
    """A verifier's decision on one candidate hit; ``reason`` says why a veto was cast."""

    accept: bool
    reason: str = ""
    stage: str = ""


ACCEPT = Verdict(True)


@runtime_checkable
class Verifier(Protocol):
    """Decides whether ``candidate`` (a stored prompt) may answer ``query``."""

    @property
    def name(self) -> str: ...

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict: ...


class AcceptAll:
    """No verification: every candidate at or above the threshold is served."""

    name = "none"

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        return ACCEPT


class Chain:
    """Run verifiers in order; the first veto wins and names its stage."""

    def __init__(self, verifiers: Sequence[Verifier]) -> None:
        self.verifiers = list(verifiers)
        self.name = "+".join(v.name for v in self.verifiers) or "none"

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        for verifier in self.verifiers:
            verdict = verifier.verify(query, candidate, similarity)
            if not verdict.accept:
                return verdict if verdict.stage else Verdict(False, verdict.reason, verifier.name)
        return ACCEPT
