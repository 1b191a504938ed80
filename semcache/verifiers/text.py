"""Reading a prompt once for the rule verifier: tokens, numbers, identifiers, dates, cues.

``analyze(text)`` is cached (a lookup compares one query with up to a few candidates, and a stored
prompt is compared again on every near-duplicate query), so each text is tokenized once. Everything
is plain ``re`` and dictionaries: the verifier runs on every semantic candidate and must cost far
less than the embedding that found it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from semcache.verifiers import lexicon as lx

BREAKS = frozenset({".", "?", "!", ";", ":", "-", "<nl>"})

_QUOTES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


def _rules(pairs: list[tuple[str, str]]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(p, re.I), r) for p, r in pairs]


# Contractions with an apostrophe: only run when the text has one (most requests do not).
_APOSTROPHE = _rules([
    (r"\bcan't\b", "can not"),
    (r"\bwon't\b", "will not"),
    (r"\bshan't\b", "shall not"),
    (r"\bain't\b", "is not"),
    (r"(\w)n't\b", r"\1 not"),
    (r"(\w)'re\b", r"\1 are"),
    (r"(\w)'ve\b", r"\1 have"),
    (r"(\w)'ll\b", r"\1 will"),
    (r"(\w)'d\b", r"\1 would"),
    (r"\b(it|that|there|here|he|she)'s\b", r"\1 is"),
    (r"\blet's\b", "let us"),
])  # fmt: skip
_POSSESSIVE = re.compile(r"(\w)'s\b")
# Rewrites that also apply without an apostrophe ("cant", "whats", "im"), and phrases the checks
# read as one word. One alternation, so a text is scanned once.
_PHRASES = {
    "cannot": "can not", "on time": "on_time", "out of": "out_of", "or not": "or",
    "in front of": "in_front_of",
}  # fmt: skip
_REWRITE = re.compile(
    r"\b(?:(?P<neg>can|do|does|did|is|are|was|were|has|have|had|could|would|should|must|need)n'?t"
    r"|(?P<wh>what|where|who|when|why|how|i)'?(?P<tail>s|m)"
    r"|(?P<phrase>cannot|on time|out of|or not|in front of)"
    r"|(?P<ampm>[ap])\.m\."
    r"|(?P<verb>log|sign|check|opt)(?:s|ged|ed|ging|ing)?\s+(?P<inout>in|out)"
    r"|(?P<num>\d+(?:[.,]\d+)?)\s*(?P<mag>k|m|bn|thousand|million|billion))\b",
    re.I,
)


def _rewrite(m: re.Match[str]) -> str:
    if m["neg"]:
        return f"{m['neg']} not"
    if m["wh"]:
        wh, tail = m["wh"], m["tail"].lower()
        if (wh.lower() == "i") != (tail == "m"):
            return m[0]  # "is", "whom"...: not a contraction
        return f"{wh} {'am' if tail == 'm' else 'is'}"
    if m["phrase"]:
        return _PHRASES[m["phrase"].lower()]
    if m["ampm"]:
        return f"{m['ampm']}m"
    if m["verb"]:
        return f"{m['verb']}_{m['inout']}"
    return f"{m['num']}{m['mag']}"


_TOKEN = re.compile(
    r"(?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)"
    r"|(?P<url>https?://\S+)"
    r"|(?P<nl>\n)"
    r"|(?P<cur>[$€£¥])"
    r"|(?P<num>#?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?)"
    r"|(?P<tok>[\w#][\w.\-/:#+']*[\w%]|[\w%])"
    r"|(?P<punct>[?!.,;:&]|(?<!\S)[-–—](?!\S))"
)
_WORD = re.compile(r"[^\W\d_]+(?:[-'_][^\W\d_]+)*")
_HAS_DIGIT = re.compile(r"\d")
_PLAIN_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_TIME = re.compile(r"(\d{1,2}):(\d{2})(am|pm)?|(\d{1,2})(am|pm)")
_SUFFIXED = re.compile(
    r"(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:[.,]\d+)?)(st|nd|rd|th|%|k|m|bn|thousand|million|billion|kg|km|g|h|ml|gb|mb|tb|lbs?)"
)
_ABBREVIATION = re.compile(r"[^\W\d_]+(?:\.[^\W\d_]+)+")
_VERSION = re.compile(r"v?\d+(?:\.\d+){2,}")
_DIGIT_GROUPS = re.compile(r"\d+(?:[-/]\d+)+")
_MONTH_NUMBERS = (
    "jan",
    "feb",
    "mar",
    "apr",
    "may",
    "jun",
    "jul",
    "aug",
    "sep",
    "oct",
    "nov",
    "dec",
)


@dataclass(frozen=True)
class Analysis:
    """What the checks compare. Values are normalized (``display`` maps them back for reasons)."""

    tokens: tuple[str, ...]  # words, values and breaks (".", "?", "<nl>" ...), lowercased
    numbers: Counter[str]
    identifiers: Counter[str]
    dates: frozenset[str]
    times: frozenset[str]
    currencies: frozenset[str]
    units: frozenset[str]
    negations: Counter[str]
    questions: frozenset[str]
    display: dict[str, str]


def number_value(text: str) -> str:
    """``"1,250.00"`` and ``"01250"`` both become ``"1250"``; magnitudes keep their suffix."""
    text = text.replace(",", "")
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{value:.6f}".rstrip("0").rstrip(".")


class _Reader:
    """Collects values while walking the tokens of one text."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.numbers: Counter[str] = Counter()
        self.identifiers: Counter[str] = Counter()
        self.dates: set[str] = set()
        self.times: set[str] = set()
        self.currencies: set[str] = set()
        self.units: set[str] = set()
        self.display: dict[str, str] = {}

    def number(self, value: str, shown: str) -> None:
        self.numbers[value] += 1
        self.display.setdefault(value, shown)
        self.tokens.append(value)

    def identifier(self, value: str, shown: str) -> None:
        self.identifiers[value] += 1
        self.display.setdefault(value, shown)
        self.tokens.append(value)

    def value_token(self, raw: str) -> None:
        """A token holding digits: a number, a date, a time, a quantity or an identifier."""
        low = raw.lower().lstrip("#")
        if _PLAIN_NUMBER.fullmatch(low):
            self.number(number_value(low), raw.lstrip("#"))
        elif m := _ISO_DATE.fullmatch(low):
            month = int(m[2])
            if 1 <= month <= 12:
                self.dates.add(_MONTH_NUMBERS[month - 1])
            self.number(number_value(m[3]), m[3])
            self.number(number_value(m[1]), m[1])
        elif m := _TIME.fullmatch(low):
            hour = m[1] or m[4]
            self.number(number_value(hour) + (f":{m[2]}" if m[2] and m[2] != "00" else ""), raw)
            if m[3] or m[5]:
                self.times.add(m[3] or m[5])
        elif m := _SUFFIXED.fullmatch(low):
            suffix = m[2]
            if suffix in lx.MAGNITUDES:
                self.number(number_value(m[1]) + lx.MAGNITUDES[suffix], raw)
            else:
                self.number(number_value(m[1]), raw)
                if suffix in lx.UNITS:
                    self.units.add(lx.UNITS[suffix])
        elif _VERSION.fullmatch(low):
            self.identifier(low.lstrip("v"), raw)
        elif _DIGIT_GROUPS.fullmatch(low):
            for part in re.split(r"[-/]", low):
                self.number(number_value(part), part)
        else:
            self.identifier(low, raw)


def _words_number(word: str) -> int | None:
    parts = word.split("-")
    if all(p in lx.NUMBER_WORDS for p in parts):
        return sum(lx.NUMBER_WORDS[p] for p in parts)
    return None


@lru_cache(maxsize=8192)
def analyze(text: str) -> Analysis:
    """Tokenize ``text`` and pull out everything the rule checks compare."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    if "'" in text:
        for pattern, replacement in _APOSTROPHE:
            text = pattern.sub(replacement, text)
    text = _REWRITE.sub(_rewrite, text)
    if "'" in text:
        text = _POSSESSIVE.sub(r"\1", text)
    r = _Reader()
    for m in _TOKEN.finditer(text):
        kind, raw = m.lastgroup, m[0]
        if kind in ("email", "url"):
            r.identifier(raw.lower(), raw)
        elif kind == "nl":
            if r.tokens and r.tokens[-1] != "<nl>":
                r.tokens.append("<nl>")
        elif kind == "cur":
            r.currencies.add(lx.CURRENCIES[raw])
        elif kind == "num":
            r.value_token(raw)
        elif kind == "punct":
            r.tokens.append("-" if raw in "–—" else raw)
        elif raw.isalpha():
            word = raw.lower()
            n = lx.NUMBER_WORDS.get(word)
            if n is not None:
                r.number(str(n), raw)
            else:
                r.tokens.append(word)
        elif _HAS_DIGIT.search(raw):
            r.value_token(raw)
        else:
            word = raw.lower().strip("'")
            n = _words_number(word)
            if n is not None:
                r.number(str(n), raw)
            elif _WORD.fullmatch(word):
                r.tokens.append(word)
            elif _ABBREVIATION.fullmatch(word):  # "u.s" and "us", "e.g" and "eg" are one word
                r.tokens.append(word.replace(".", ""))
            else:  # letters with symbols: "c++", "a#b"
                r.identifier(word, raw)
    tokens = tuple(r.tokens)
    _read_words(tokens, r)
    return Analysis(
        tokens=tokens,
        numbers=r.numbers,
        identifiers=r.identifiers,
        dates=frozenset(r.dates),
        times=frozenset(r.times),
        currencies=frozenset(r.currencies),
        units=frozenset(r.units),
        negations=_negations(tokens),
        questions=_questions(tokens, "?" in tokens),
        display=r.display,
    )


def _is_number(token: str) -> bool:
    return bool(token) and (token[0].isdigit())


def _read_words(tokens: tuple[str, ...], r: _Reader) -> None:
    """Dates, currencies and units spelled as words, which need their neighbours to decide."""
    for i, t in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if t in lx.MONTHS and (t not in ("may", "march") or _is_number(prev) or _is_number(nxt)):
            r.dates.add(lx.MONTHS[t])
        elif t in lx.WEEKDAYS or t in lx.RELATIVE_DAYS or t in lx.PERIODS:
            key = lx.WEEKDAYS.get(t, t)
            if prev in lx.DATE_QUALIFIERS:
                r.dates.add(f"{prev} {key}")
            elif t not in lx.PERIODS and t not in ("now", "asap"):
                r.dates.add(key)
        elif t in lx.TIMES_OF_DAY and (t not in ("am", "pm") or _is_number(prev)):
            r.times.add(t)
        if t in lx.CURRENCIES and t not in ("pound",):
            r.currencies.add(lx.CURRENCIES[t])
        if t in lx.UNITS and _is_number(prev) and t not in lx.CURRENCIES:
            r.units.add(lx.UNITS[t])


def _negations(tokens: tuple[str, ...]) -> Counter[str]:
    cues: Counter[str] = Counter()
    for i, t in enumerate(tokens):
        if t in lx.NEGATION_CUES or (
            t in lx.NEGATING_VERBS and (t == "unable" or tokens[i + 1 : i + 2] == ("to",))
        ):
            cues[t] += 1
    return cues


def _questions(tokens: tuple[str, ...], asked: bool) -> frozenset[str]:
    """The kinds of answer asked for: wh-question classes, or ``yes/no`` for a polar question."""
    found: set[str] = set()
    starts = [0] + [i + 1 for i, t in enumerate(tokens) if t in BREAKS]
    for i, t in enumerate(tokens):
        if t not in lx.QUESTION_WORDS:
            continue
        prev = tokens[i - 1] if i else ""
        at_start = (
            i in starts
            or prev in lx.QUESTION_LEADS
            or (prev == "," and (asked or (i - 2 in starts and tokens[i - 2] in lx.FILLER)))
            or (prev in lx.FILLER and i - 1 in starts)
            or (prev in {"in", "on", "at", "for", "from", "to", "by", "of"} and i - 1 in starts)
        )
        if at_start:
            pair = (t, tokens[i + 1]) if i + 1 < len(tokens) else (t,)
            kind = lx.QUESTION_PHRASES.get(pair, lx.QUESTION_WORDS[t])
            if kind == "what":  # "what does it cost", "what are the steps": the answer's kind
                ahead = (lx.WHAT_ASKS_FOR.get(w) for w in tokens[i + 1 : i + 6])
                kind = next((k for k in ahead if k), kind)
            found.add(kind)
    if found:
        return frozenset(found)
    for start in starts:
        segment = tokens[start:]
        end = next((k for k, t in enumerate(segment) if t in BREAKS), len(segment))
        head = segment[:end]
        if not head or head[0] not in lx.AUXILIARIES:
            continue
        polite = head[0] in {"can", "could", "would", "will"} and head[1:2] == ("you",)
        if head[1:2] == ("not",) or (len(head) > 1 and _is_number(head[1])):
            continue  # "Do not move ...", "May 14 ..." are not questions
        asks = segment[end : end + 1] == ("?",) or start == 0
        if asks and not polite and "or" not in head:
            return frozenset({"yes/no"})
    return frozenset()
