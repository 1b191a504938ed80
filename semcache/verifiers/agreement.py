"""Answer agreement: a semantic hit is served only when no equally near neighbour disagrees.

A cosine threshold cannot tell which of two close stored requests a new one means. When the
nearest candidates hold *different* answers, the query sits between them, and serving the nearest
is a coin toss weighted by a few hundredths of similarity. The cache already fetched those
candidates and their stored answers, so the check is free: if another candidate at or above the
threshold, at most ``margin`` less similar than the one about to be served, holds a different
answer, the lookup is a miss (a veto with stage ``agreement``). This also covers the case of
serving a farther candidate after the nearest was vetoed: the vetoed one is nearer, so a different
answer there makes the lookup a miss instead of a guess (unless it was vetoed as another instance
of the request, such as another order number: see ``find_rival``).

Measured on Banking77 as an intent classifier (``benchmarks/results/sources.md``; real queries
no part of semcache was fitted to): at the default threshold, with the rules, it took the wrong
answers from 49 to 36 for hit rate 0.344 -> 0.335, more precision at that hit rate than a higher
cosine threshold buys. The margin 0.05 was chosen on a part of Banking77's train split, never on
its test split.

Only the answer's *decisive* part is compared: strings of more than ``PROSE_WORDS`` words are
prose (a summary, a generated reply) whose wording differs between two right answers, so they
are left out; labels, enums, numbers, booleans, ids and short names are compared exactly. Answers
with nothing decisive (free text only) never disagree: this check then stays out of the way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from semcache.types import StoredEntry
from semcache.verifiers.base import Verdict

# A string value with more words than this is prose and not compared.
PROSE_WORDS = 8
DEFAULT_MARGIN = 0.05

# Veto stages that say a candidate is another instance of the request (another order number,
# amount, date or unit, a word naming another answer value) or an answer marked wrong for such
# queries: that candidate's different
# answer is expected and is no evidence against the one being served. Any other veto (another
# meaning, perhaps) leaves the candidate a rival.
ANOTHER_INSTANCE = frozenset(
    {"rules.identifier", "rules.number", "rules.unit", "rules.date", "schema", "feedback"}
)

_PROSE = object()  # marks a value left out of the comparison


def decisive(response_json: str) -> str | None:
    """The canonical JSON of the decisive part of a stored answer; None when it has none."""
    try:
        value = json.loads(response_json)
    except ValueError:
        return None
    kept = _decisive(value)
    if kept is _PROSE:
        return None
    return json.dumps(kept, sort_keys=True, ensure_ascii=False)


def _decisive(value: Any) -> Any:
    if isinstance(value, str):
        return _PROSE if len(value.split()) > PROSE_WORDS else value
    if isinstance(value, dict):
        kept = {key: _decisive(item) for key, item in value.items()}
        kept = {key: item for key, item in kept.items() if item is not _PROSE}
        return kept if kept else _PROSE
    if isinstance(value, list):
        items = [_decisive(item) for item in value]
        if items and all(item is _PROSE for item in items):
            return _PROSE
        return [item for item in items if item is not _PROSE]
    return value


def disagrees(
    chosen: tuple[float, str | None], other: tuple[float, str | None], margin: float
) -> bool:
    """Whether ``other`` (similarity, decisive answer or None) is at most ``margin`` less similar
    than ``chosen`` and holds a different decisive answer; an unknown answer never disagrees."""
    similarity, answer = chosen
    other_similarity, other_answer = other
    if answer is None or other_answer is None or other_answer == answer:
        return False
    return other_similarity >= similarity - margin


def find_rival(
    similarity: float,
    row: StoredEntry,
    eligible: Sequence[tuple[float, StoredEntry]],
    judge: Callable[[float, StoredEntry], Verdict],
    margin: float | None,
) -> float | None:
    """The similarity of an eligible candidate (at or above the threshold) within ``margin`` of
    ``row`` whose decisive answer differs from ``row``'s, or None; ``margin`` None checks nothing.

    A candidate ``judge`` vetoes as another instance of the request (``ANOTHER_INSTANCE``:
    another parcel number, date, ...) does not count, so "status of parcel 118" still hits its
    own entry beside its siblings for other parcels. A candidate vetoed for anything else still
    counts: on Banking77 that kept 8 more wrong answers out than counting accepted candidates
    only (``benchmarks/results/sources.md``)."""
    if margin is None or len(eligible) < 2:
        return None
    chosen = (similarity, decisive(row.response_json))
    for other_similarity, other in eligible:
        if other.id == row.id:
            continue
        if not disagrees(chosen, (other_similarity, decisive(other.response_json)), margin):
            continue
        verdict = judge(other_similarity, other)
        if verdict.accept or verdict.stage not in ANOTHER_INSTANCE:
            return other_similarity
    return None
