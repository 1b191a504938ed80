"""Checks on who does what: the same verb with its subject and object exchanged, or turned
passive around the same subject.

"The log is lying on the panda bear" / "The panda bear is lying on the logs" and "A dog is chasing
a ball" / "A dog is being chased with a ball" share every word; the cosine is 0.91-0.96 with
all-MiniLM-L6-v2, and a word-by-word comparison sees no difference. These checks find the main
verb of the first clause in its progressive form ("is lying", "are being chased"), the most
common shape of a description, and compare which words stand before and after it. Texts whose
first clause has another shape, or whose main verbs differ, are left alone.
"""

from __future__ import annotations

from typing import NamedTuple

from semcache.verifiers import lexicon as lx
from semcache.verifiers.text import BREAKS, Analysis

_BE = frozenset({"is", "are", "am", "was", "were"})
# Words between the auxiliary and the verb that do not change the shape ("is also running").
_ADVERBS = frozenset({"also", "still", "just", "now", "currently", "not", "never", "quickly"})
# Reported speech puts the clause inside another ("X said Y is running", "Y is running, X says"):
# the words around it are not its subject or object.
_SPEECH = frozenset({"said", "say", "says", "told", "tells", "according", "reported", "reports"})
_SUBJECT_MAX = 8  # a longer stretch before the verb is rarely a plain subject
# After an active verb, these mean it has no direct object ("the refund is processing for order
# A-1" is the same request as "... is being processed for order A-1").
_NO_OBJECT = lx.RELATIONS | lx.words(
    "for in with by about through around across along past out up down away and or but so"
)


class Clause(NamedTuple):
    verb: str  # stem of the main verb
    shown: str  # the verb as written
    passive: bool
    has_object: bool  # an active verb followed by its direct object ("is chasing a ball")
    before: frozenset[str]  # stems of the words before the verb (the subject side)
    after: frozenset[str]  # stems of the words after it, up to the end of the first sentence


def _word(token: str) -> bool:
    return token[:1].isalpha() and token not in lx.STOPWORDS and token not in lx.SYMMETRIC


def main_clause(tokens: tuple[str, ...]) -> Clause | None:
    """The first "<be> [being] <verb>" of the first sentence, or None."""
    end = next((i for i, t in enumerate(tokens) if t in BREAKS), len(tokens))
    sentence = tokens[:end]
    for i, t in enumerate(sentence):
        if t not in _BE or i == 0:
            continue
        if i > _SUBJECT_MAX or "," in sentence[:i] or _SPEECH & set(sentence[:i]):
            return None
        j = i + 1
        while j < len(sentence) and sentence[j] in _ADVERBS:
            j += 1
        if j >= len(sentence):
            return None
        passive = sentence[j] == "being" and j + 1 < len(sentence)
        verb = sentence[j + 1] if passive else sentence[j]
        if not passive and not (verb.endswith("ing") and len(verb) > 4):
            return None  # "is a", "are happy": not a progressive verb
        k = j + 2 if passive else j + 1
        stop = next(
            (n for n in range(k, len(sentence)) if sentence[n] == "," or sentence[n] in _SPEECH),
            len(sentence),
        )
        nxt = sentence[k] if k < len(sentence) else ","
        return Clause(
            lx.stem(verb),
            verb,
            passive,
            not passive and nxt != "," and nxt not in _NO_OBJECT,
            frozenset(lx.stem(w) for w in sentence[:i] if _word(w)),
            frozenset(lx.stem(w) for w in sentence[k:stop] if _word(w)),
        )
    return None


def check_role(a: Analysis, b: Analysis) -> str | None:
    """The same main verb with a word that is its subject in one text and its object in the
    other ("a horse and its rider are leaping over" / "the horse is leaping over the rider"), or
    in another voice around the same subject ("a dog is chasing" / "a dog is being chased")."""
    ca, cb = main_clause(a.tokens), main_clause(b.tokens)
    if ca is None or cb is None or ca.verb != cb.verb:
        return None
    if ca.passive != cb.passive:
        active, passive = (ca, cb) if cb.passive else (cb, ca)
        by = "by" in a.tokens or "by" in b.tokens
        if active.has_object and active.before & passive.before and not by:
            subject = sorted(active.before & passive.before)[0]
            return f"voice differs: '{subject}' does the {active.shown} in one text only"
        return None
    # A word on both sides of the verb in one text ("a rabbit is playing with a stuffed bunny" /
    # "a bunny is playing with a stuffed bunny") has no single role to compare.
    both = (ca.before & ca.after) | (cb.before & cb.after) | {ca.verb}
    crossed = ((ca.before & cb.after) - cb.before | (cb.before & ca.after) - ca.before) - both
    if crossed:
        word = sorted(crossed)[0]
        return f"role differs: '{word}' is the subject of '{ca.shown}' in one text only"
    return None
