"""The response model as evidence: words that name an answer must be said on both sides or neither.

In an extraction or classification scope the schema says which words decide the answer: the
values of a ``Literal`` or ``Enum`` field of a few values ("urgent" for a ``priority``, "refund" for a
``category``) and the names of boolean fields ("wants_refund", "is_gift"). When such a word
occurs in the new request and not in the stored one (or the reverse), the two requests most
likely get different answers however close their embeddings are: "My lamp arrived broken, it's
urgent" against "My lamp arrived broken" differs in exactly the word the ``priority`` field is
about. Words are compared after a light stemming ("refunded", "refunds" and "refund" are one
term) and only when a term names one value of its field, so a word that several labels share
("card" in "card_arrival" and "card_linking") is no evidence for either.

This reads only the schema, never stored answers, and costs a set intersection per candidate.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from semcache.verifiers.base import ACCEPT, Verdict, Verifier

STAGE = "schema"
# A field with more values than this is a taxonomy of topics (77 banking intents), whose label
# words ("card", "arrival", "transfer") are the topic in short rather than words a request says
# to choose the value. Measured on Banking77 as a classifier with a Literal of its 77 intents at
# the defaults: with those labels as evidence the hit rate fell 0.356 -> 0.297 and precision
# 0.966 -> 0.964, so such fields give no evidence. Fields of a few values (a priority, a
# status, a queue) name attributes a request states in words ("it's urgent").
MAX_VALUES = 12

_WORD = re.compile(r"[a-z0-9]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SUFFIXES = ("ments", "ment", "ings", "ing", "ies", "ied", "ed", "es", "ly", "al", "s")
# Words a value or a boolean field's name uses to read as a phrase, not as evidence.
_FILLER = frozenset(
    [
        "a",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "other",
        "the",
        "to",
        "was",
        "wants",
        "want",
        "with",
        "none",
        "null",
        "unknown",
        "misc",
        "general",
    ]
)


def stem(word: str) -> str:
    """A light suffix strip, enough to put inflections of one word together."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word


def _terms_of(name: str) -> list[str]:
    spaced = _CAMEL.sub(" ", name).lower().replace("_", " ").replace("-", " ")
    return [stem(w) for w in _WORD.findall(spaced) if len(w) > 2 and w not in _FILLER]


def _walk(node: Any, defs: dict[str, Any], groups: list[list[str]], seen: set[str]) -> None:
    """Collect the schema's answer values as groups: one ``enum`` (``Literal``, ``Enum``) of at
    most ``MAX_VALUES`` strings each, and one group per boolean field name."""
    if isinstance(node, list):
        for item in node:
            _walk(item, defs, groups, seen)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref not in seen:
        seen.add(ref)
        _walk(defs.get(ref.rsplit("/", 1)[-1], {}), defs, groups, seen)
    values = [v for v in node.get("enum", []) if isinstance(v, str)]
    if 0 < len(values) <= MAX_VALUES:
        groups.append(values)
    for name, prop in (node.get("properties") or {}).items():
        if isinstance(prop, dict) and prop.get("type") == "boolean":
            groups.append([name])
    for key, child in node.items():
        if key not in ("enum", "const", "$defs", "definitions"):
            _walk(child, defs, groups, seen)


@lru_cache(maxsize=256)
def schema_terms(model: type[BaseModel]) -> frozenset[str]:
    """The stemmed words of ``model``'s answer values that name one value within their field (a
    word shared by several values of one field tells none of them apart)."""
    try:
        schema = model.model_json_schema()
    except Exception:  # a schema pydantic cannot render gives no evidence
        return frozenset()
    defs = {**schema.get("$defs", {}), **schema.get("definitions", {})}
    groups: list[list[str]] = []
    _walk(schema, defs, groups, set())
    terms: set[str] = set()
    for group in groups:
        owners: dict[str, set[str]] = {}
        for phrase in set(group):
            for term in _terms_of(phrase):
                owners.setdefault(term, set()).add(phrase)
        terms.update(term for term, named in owners.items() if len(named) == 1)
    return frozenset(terms)


def _text_terms(text: str, terms: frozenset[str]) -> set[str]:
    return {s for s in (stem(w) for w in _WORD.findall(text.lower())) if s in terms}


def check_schema_terms(query: str, candidate: str, terms: frozenset[str]) -> Verdict:
    """A veto when a term of ``terms`` occurs on one side only."""
    if not terms:
        return ACCEPT
    in_query, in_candidate = _text_terms(query, terms), _text_terms(candidate, terms)
    if in_query == in_candidate:
        return ACCEPT
    only_query = sorted(in_query - in_candidate)
    only_candidate = sorted(in_candidate - in_query)
    side = (
        f"only in the query: {', '.join(only_query)}"
        if only_query
        else f"only in the cached prompt: {', '.join(only_candidate)}"
    )
    return Verdict(False, f"a word that names an answer value is {side}", STAGE)


def judge(
    verifier: Verifier,
    query: str,
    candidate: str,
    similarity: float,
    model: type[BaseModel] | None,
) -> Verdict:
    """How a candidate is judged, whether it is about to be served or labelled as a near miss:
    the verifier, then, when it accepts and ``model`` is given, the response model's words."""
    verdict = verifier.verify(query, candidate, similarity)
    if verdict.accept and model is not None:
        return check_schema_terms(query, candidate, schema_terms(model))
    return verdict
