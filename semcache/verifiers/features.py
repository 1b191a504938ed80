"""What the learned verifier reads from a (query, stored prompt, cosine) pair: a few numbers.

Each feature is cheap (the texts are already analyzed for the rules, ``analyze`` is cached) and
symmetric: swapping query and candidate gives the same values, so a veto does not depend on which
text came first. They describe how the two texts differ *after* the rules accepted them: content
words left unmatched on each side (a different product, city or person in a reworded request),
capitalized names replaced by others, an added clause, shared words in another order (not counted
when one text is passive: "a man is riding a horse" / "a horse is being ridden by a man").
"""

from __future__ import annotations

import re
from itertools import combinations

from semcache.verifiers import lexicon as lx
from semcache.verifiers.rules import _content
from semcache.verifiers.text import Analysis, analyze

# Names in the order of the vector ``pair_features`` returns; the weights file lists them too, so
# a file trained for another feature set is refused instead of silently misread.
FEATURES: tuple[str, ...] = (
    "cosine",
    "content_overlap",
    "unmatched_min",
    "unmatched_max",
    "unmatched_share",
    "names_replaced",
    "names_unmatched_any",
    "length_ratio",
    "order_discordance",
    "clause_words_added",
)
# Descriptions for veto reasons: the feature that pulled the probability down the most.
DESCRIPTIONS: dict[str, str] = {
    "cosine": "low similarity",
    "content_overlap": "few content words in common",
    "unmatched_min": "different content words on both sides",
    "unmatched_max": "content words without a counterpart",
    "unmatched_share": "a large share of unmatched content words",
    "names_replaced": "different names on both sides",
    "names_unmatched_any": "a name on one side only",
    "length_ratio": "different lengths",
    "order_discordance": "shared words in another order",
    "clause_words_added": "an added clause",
}

_CAP = 4  # counts above this add nothing: a long rewording is not "more different" per word
# Words that open a clause or a coordinated part: an added one usually adds a fact.
_CLAUSES = "and but while which who whom whose that because although though since unless whereas"
_CLAUSE_WORDS = frozenset(f"{_CLAUSES} after before when where so".split())
_NAME = re.compile(r"(?<![\w'])([A-Z][a-z]+(?:[A-Z][a-z]+)*)\b")
_OPENERS = tuple(".!?:;\"'(-")  # a capital after these starts a sentence, not a name


def _content_stems(a: Analysis) -> list[str]:
    return [lx.stem(t) for t in a.tokens if _content(t)]


def _matched(stem: str, others: set[str], other_groups: frozenset[int]) -> bool:
    return stem in others or bool(lx.SYNONYM_GROUPS.get(stem, frozenset()) & other_groups)


def _groups(stems: set[str]) -> frozenset[int]:
    out: set[int] = set()
    for s in stems:
        out |= lx.SYNONYM_GROUPS.get(s, frozenset())
    return frozenset(out)


def _names(text: str) -> set[str]:
    """Capitalized words that do not start a sentence: names of people, places, products."""
    found = set()
    for m in _NAME.finditer(text):
        before = text[: m.start()].rstrip()
        if before and not before.endswith(_OPENERS):
            found.add(m[1].lower())
    return found


def _discordance(a: list[str], b: list[str]) -> float:
    """Share of pairs of shared words whose order differs (0: same order, 1: reversed)."""
    first_b: dict[str, int] = {}
    for i, s in enumerate(b):
        first_b.setdefault(s, i)
    seen: set[str] = set()
    order = []
    for s in a:
        if s in first_b and s not in seen:
            seen.add(s)
            order.append(first_b[s])
    pairs = list(combinations(order, 2))
    if not pairs:
        return 0.0
    return sum(1 for x, y in pairs if x > y) / len(pairs)


def pair_features(query: str, candidate: str, similarity: float) -> list[float]:
    """The values of ``FEATURES`` for one pair, in that order."""
    a, b = analyze(query), analyze(candidate)
    ca, cb = _content_stems(a), _content_stems(b)
    sa, sb = set(ca), set(cb)
    ga, gb = _groups(sa), _groups(sb)
    unmatched_a = [s for s in sa if not _matched(s, sb, gb)]
    unmatched_b = [s for s in sb if not _matched(s, sa, ga)]
    union = sa | sb
    low, high = sorted((len(unmatched_a), len(unmatched_b)))
    words_a = {t for t in a.tokens} | sa
    words_b = {t for t in b.tokens} | sb
    all_a, all_b = _names(query), _names(candidate)
    names_a = {n for n in all_a if n not in words_b and lx.stem(n) not in words_b}
    names_b = {n for n in all_b if n not in words_a and lx.stem(n) not in words_a}
    # A name replaced by another ("Athens" / "Seoul"), as a share of all the names: one of two
    # in a short request, not one of twelve in a news sentence that mentions others as well.
    replaced = (len(names_a) + len(names_b)) / len(all_a | all_b) if names_a and names_b else 0.0
    clauses_a = sum(1 for t in a.tokens if t in _CLAUSE_WORDS)
    clauses_b = sum(1 for t in b.tokens if t in _CLAUSE_WORDS)
    discordance = max(_discordance(ca, cb), _discordance(cb, ca))
    if ("by" in a.tokens) != ("by" in b.tokens):
        discordance = 0.0  # a passive rewording reverses the order ("a man is riding a horse")
    return [
        similarity,
        len(sa & sb) / len(union) if union else 1.0,
        min(low, _CAP) / _CAP,
        min(high, _CAP) / _CAP,
        (len(unmatched_a) + len(unmatched_b)) / len(union) if union else 0.0,
        replaced,
        float(bool(names_a) or bool(names_b)),
        min(len(ca), len(cb)) / max(len(ca), len(cb), 1),
        discordance,
        min(abs(clauses_a - clauses_b), _CAP) / _CAP,
    ]
