"""Word lists the rule verifier reads: stems of opposites, synonyms, negation cues, question words.

Written by hand for English requests (support tickets, extraction and classification prompts,
questions). They are deliberately short: every entry is a pair a cache has to tell apart (or must
not tell apart), and a longer list costs false vetoes on text it was not written for. Words are
compared by ``stem()`` so that "closed", "closes" and "closing" are one entry.
"""

from __future__ import annotations

from functools import cache


def words(text: str) -> frozenset[str]:
    """The words of a space-separated list."""
    return frozenset(text.split())


@cache
def stem(word: str) -> str:
    """A crude suffix stripper: enough to make inflections of one word compare equal.

    Not a linguistic stemmer (it maps "hated" and "hat" together); both texts go through the same
    function, so only the rare collision between two different words can matter.
    """
    w = word.lower()
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif (len(w) > 4 and w.endswith("ed")) or (len(w) > 4 and w.endswith("es") and w[-3] in "sxz"):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] in "bdgmnprt":  # stopped -> stopp -> stop
        w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


# Suffixes that make another word class of the same word: "snow" / "snowy", "terror" /
# "terrorism", "northeast" / "northeastern", "shrewd" / "shrewdly".
DERIVATIONAL_SUFFIXES = ("ly", "y", "ern", "ism", "ic", "al", "ness", "ment", "ion")


def derived(x: str, y: str) -> bool:
    """One stem is the other plus a derivational suffix (both at least four letters long)."""
    short, long = (x, y) if len(x) <= len(y) else (y, x)
    return (
        len(short) >= 4 and long.startswith(short) and long[len(short) :] in DERIVATIONAL_SUFFIXES
    )


# Opposites: (one side, other side). A veto needs a word of one side only in one text and a word
# of the other side only in the other text.
_OPPOSITES_RAW: list[tuple[str, str]] = [
    ("open opened opening reopen", "close closed closing shut"),
    ("love like enjoy adore", "hate dislike detest loathe"),
    ("good great excellent perfect perfectly amazing awesome fantastic", "bad terrible terribly awful horrible poor poorly worst"),
    ("best", "worst"),
    ("happy glad", "sad unhappy"),
    ("agree", "disagree"),
    ("accept approve allow", "reject decline deny refuse block"),
    ("win won beat", "lose lost"),
    ("buy purchase", "sell sold"),
    ("import", "export"),
    ("upload", "download"),
    ("send sent", "receive received"),
    ("deposit", "withdraw withdrew withdrawal"),
    ("credit", "debit"),
    ("income profit gain", "expense loss"),
    ("add include", "remove delete exclude subtract"),
    ("enable activate", "disable deactivate"),
    ("start begin started", "stop end finish"),
    ("upgrade", "downgrade"),
    ("increase rise rose raise grow", "decrease fall fell drop lower shrink"),
    ("more most", "less least fewer"),
    ("higher highest", "lower lowest"),
    ("bigger biggest larger largest", "smaller smallest"),
    ("longer longest", "shorter shortest"),
    ("faster fastest", "slower slowest"),
    ("older oldest", "newer newest younger youngest"),
    ("cheap cheaper cheapest", "expensive pricey"),
    ("early earlier earliest", "late later latest"),
    ("before", "after"),
    ("above over", "below under"),
    ("first", "last"),
    ("top", "bottom"),
    ("ascending", "descending"),
    ("maximum max", "minimum min"),
    ("hot warm", "cold cool"),
    ("wet", "dry"),
    ("full", "empty"),
    ("indoors", "outdoors"),
    ("up", "down"),
    ("left", "right"),
    ("right correct", "wrong incorrect"),
    ("true", "false"),
    ("yes", "no"),
    ("positive", "negative"),
    ("online", "offline"),
    ("public", "private"),
    ("internal", "external"),
    ("incoming inbound", "outgoing outbound"),
    ("arrive arrival", "depart departure leave"),
    ("enter", "exit"),
    ("lock", "unlock"),
    ("subscribe", "unsubscribe"),
    ("connect", "disconnect"),
    ("install", "uninstall"),
    ("encrypt", "decrypt"),
    ("show", "hide"),
    ("pass", "fail"),
    ("success successful", "failure unsuccessful"),
    ("safe", "dangerous unsafe"),
    ("easy", "hard difficult"),
    ("possible", "impossible"),
    ("available", "unavailable"),
    ("same", "different"),
    ("always", "never"),
    ("all everyone everything", "none nobody nothing"),
    ("one-way", "round-trip return"),
    ("schedule book", "cancel"),
    ("man men boy", "woman women girl"),
    ("husband", "wife"),
    ("north", "south"),
    ("east", "west"),
    ("day", "night"),
    ("morning", "evening"),
    ("asleep", "awake"),
    ("sit sitting", "stand standing"),
    ("dead", "alive"),
    ("young", "old"),
    ("new", "old used"),
    ("tall", "short"),
    ("long", "short"),
    ("fat thick", "thin"),
    ("rich", "poor"),
    ("high", "low"),
    ("heavy", "light"),
    ("paid", "unpaid"),
    ("opened", "unopened sealed"),
    ("working", "broken"),
    ("work works worked", "break breaks broke"),
    ("present", "absent"),
    ("mandatory required", "optional"),
    ("legal", "illegal"),
    ("valid", "invalid"),
    ("include", "exclude"),
    ("push", "pull"),
    ("plus", "minus"),
    ("multiply", "divide"),
    ("question", "answer"),
    ("input", "output"),
    ("inhale", "exhale"),
    ("behind", "in_front_of front"),
    ("near nearby", "far away"),
    ("shallow", "deep"),
    ("on_time early punctual", "late delayed"),
    ("on onto", "off"),
    ("into in inside", "out_of outside"),
    ("toward towards", "away"),
    ("put place", "remove"),
]  # fmt: skip

# Words that name the same thing in requests: a substitution of one for the other is not a
# different request. Each line is one group of interchangeable words.
_SYNONYMS_RAW: list[str] = [
    "buy purchase order",
    "start begin launch found founded founder",
    "end finish",
    "big large huge",
    "small little tiny",
    "fast quick quickly rapid",
    "help assist support",
    "fix repair",
    "car automobile vehicle",
    "photo picture image pic",
    "movie film",
    "shop store",
    "kid child children kids",
    "delete remove erase",
    "cost price",
    "error problem issue bug",
    "get receive obtain",
    "show display",
    "send ship deliver delivery shipping",
    "need want require",
    "rise increase climb",
    "phone telephone cellphone mobile tel",
    "email e-mail mail",
    "cancel terminate",
    "reply respond answer",
    "talk speak",
    "sofa couch",
    "mom mother",
    "dad father",
    "gift present",
    "refund reimburse reimbursement",
    "book reserve reservation",
    "ticket seat",
    "people person passenger passengers guest guests",
    "hotel room",
    "classify categorize categorise label",
    "extract pull parse",
    "detail details info information",
    "quick brief",
    "broken damaged faulty defective",
    "say tell state",
    "make create",
    "allowed possible able",
    "forecast weather",
    "move reschedule shift push",
    "transfer pay paid sent send",
    "detect identify determine",
    "kind type category section",
    "amount total sum",
    "intent intention",
    "lady woman",
    "guy man bloke",
    "someone somebody",
    "several few some",
    "look stare watch gaze",
    "walk stroll",
    "slice cut chop dice",
    "container box",
    "jacket coat",
    "plane airplane aircraft",
    "quickly rapidly",
    "carefully cautiously",
    "meal food dish",
    "group cluster crowd",
    "road street",
    "grass lawn",
    "beach seashore shore",
    "win get awarded award",
    "outside outdoors",
    "someone somebody person",
    "put place",
    "near close nearby",
    "marriage wedding",
    "young little small",
    "battle fight fighting",
    "sunglasses shades",
    "jump leap hop",
    "hit strike knock",
    "bike bicycle",
    "pack herd group",
    "talk chat",
    "scare frighten",
    "cross traverse",
    "pause stop halt",
    "path trail track",
    "piece slice",
    "photo camera",
    "man male",
    "woman female",
    "rest lie lying",
    "run sprint race",
    "cap hat",
    "fur coat",
    "play playing fun enjoy",
    "gray grey",
    "color colour",
    "honor honour",
    "favorite favourite",
    "center centre",
    "theater theatre",
]

NEGATION_CUES = frozenset(
    {"not", "no", "never", "none", "nobody", "nothing", "nowhere", "neither", "nor", "without"}
)
# "failed to log in" denies what "logged in" asserts.
NEGATING_VERBS = frozenset({"fail", "failed", "fails", "failing", "unable"})

# Question words and the class of answer they ask for. Multi-word ones are matched first.
QUESTION_PHRASES: dict[tuple[str, ...], str] = {
    ("how", "much"): "how much",
    ("how", "many"): "how many",
    ("how", "long"): "how long",
    ("how", "often"): "how often",
    ("how", "far"): "how far",
    ("how", "old"): "how old",
    ("how", "come"): "why",
    ("what", "time"): "when",
    ("what", "year"): "when",
    ("what", "date"): "when",
    ("what", "day"): "when",
    ("which", "year"): "when",
    ("which", "day"): "when",
    ("what", "for"): "why",
    ("what", "reason"): "why",
    ("what", "price"): "how much",
    ("what", "amount"): "how much",
    ("what", "number"): "how much",
}
QUESTION_WORDS: dict[str, str] = {
    "what": "what",
    "which": "what",
    "who": "who",
    "whom": "who",
    "whose": "who",
    "when": "when",
    "where": "where",
    "why": "why",
    "how": "how",
}
# "what" followed (within a few words) by one of these asks for the same as another question word.
WHAT_ASKS_FOR: dict[str, str] = {
    "cost": "how much", "costs": "how much", "price": "how much", "fee": "how much",
    "time": "when", "year": "when", "date": "when", "reason": "why", "steps": "how", "way": "how",
}  # fmt: skip
AUXILIARIES = words(
    "is are am was were do does did can could will would should shall has have had may might must"
)
# A wh-word after these is still the question being asked ("can you tell me where ...").
QUESTION_LEADS = words("tell know wondering wonder ask explain show find idea sure see check me")
# Words that never make two requests different on their own.
STOPWORDS = words("""a an the this that these those it its of in on at to for from by with about into onto as
    and or but so if then than i me my mine we us our you your he him his she her they them their
    is are am was were be been being do does did done can could will would should shall may might
    must have has had having please hi hello hey thanks thank thx ok okay just really very still
    also too even quite pretty super totally actually basically kindly maybe perhaps some any
    there here what which who whom whose when where why how quick one up out""")
FILLER = words("""please kindly just really very still also too even quite actually basically currently
    now hi hello hey thanks thank thx quick question one ok okay so well right""")
# Words that give the words around them a role: "from X to Y", "X than Y", template values.
RELATIONS = words(
    "to from into onto than until till against toward towards over under before after via "
    "behind in_front_of above below beneath on off at <nl>"
)
# Relation words that mean the same for a swap: "from May 3 until May 5" = "from May 3 to May 5".
RELATION_ALIASES = {"until": "to", "till": "to", "through": "to", "thru": "to"}
# Words in the slot between two swapped entities that carry no direction.
SYMMETRIC = frozenset({"and", "or", "nor", "&", "vs", "versus", "plus", ",", "the", "a", "an"})

_SMALL_NUMBERS = "two three four five six seven eight nine ten eleven twelve thirteen fourteen"
_TEENS = "fifteen sixteen seventeen eighteen nineteen twenty"
# "one" is left out on purpose: far more often a pronoun ("the one I ordered") than a count.
NUMBER_WORDS: dict[str, int] = {
    w: n for n, w in enumerate(f"{_SMALL_NUMBERS} {_TEENS}".split(), start=2)
}
NUMBER_WORDS.update({"zero": 0, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60})
NUMBER_WORDS.update({"seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "dozen": 12})
NUMBER_WORDS.update({"twice": 2})
MAGNITUDES = {"thousand": "k", "k": "k", "million": "m", "mn": "m", "billion": "bn", "bn": "bn"}

MONTHS = {
    "january": "jan", "jan": "jan", "february": "feb", "feb": "feb", "march": "mar",
    "april": "apr", "apr": "apr", "may": "may", "june": "jun", "july": "jul", "august": "aug",
    "aug": "aug", "september": "sep", "sept": "sep", "october": "oct", "oct": "oct",
    "november": "nov", "nov": "nov", "december": "dec", "dec": "dec",
}  # fmt: skip
WEEKDAYS = {
    "monday": "mon", "tuesday": "tue", "tues": "tue", "wednesday": "wed", "thursday": "thu",
    "thurs": "thu", "friday": "fri", "saturday": "sat", "sunday": "sun", "weekend": "weekend",
}  # fmt: skip
RELATIVE_DAYS = frozenset({"today", "tonight", "tomorrow", "yesterday", "now", "asap"})
DATE_QUALIFIERS = frozenset({"next", "last", "this", "previous", "coming"})
PERIODS = frozenset({"week", "month", "year", "quarter", "weekend"})
TIMES_OF_DAY = frozenset({"am", "pm", "morning", "afternoon", "evening", "night", "noon"})
CURRENCIES = {
    "$": "usd", "usd": "usd", "dollar": "usd", "dollars": "usd", "€": "eur", "eur": "eur",
    "euro": "eur", "euros": "eur", "£": "gbp", "gbp": "gbp", "pound": "gbp", "pounds": "gbp",
    "¥": "jpy", "yen": "jpy", "jpy": "jpy", "chf": "chf", "francs": "chf",
}  # fmt: skip
UNITS = {
    "%": "%", "percent": "%", "pct": "%", "km": "km", "kilometer": "km", "kilometers": "km",
    "mile": "mi", "miles": "mi", "kg": "kg", "kilogram": "kg", "kilograms": "kg", "lb": "lb",
    "lbs": "lb", "g": "g", "gram": "g", "grams": "g", "cup": "cup", "cups": "cup",
    "minute": "min", "minutes": "min", "hour": "h", "hours": "h", "h": "h", "day": "day",
    "days": "day", "week": "week", "weeks": "week", "month": "month", "months": "month",
    "year": "year", "years": "year", "gb": "gb", "mb": "mb", "tb": "tb",
}  # fmt: skip


def _expand(raw: list[tuple[str, str]]) -> dict[str, frozenset[str]]:
    opposite: dict[str, set[str]] = {}
    for left, right in raw:
        for a in left.split():
            for b in right.split():
                opposite.setdefault(stem(a), set()).add(stem(b))
                opposite.setdefault(stem(b), set()).add(stem(a))
    return {k: frozenset(v) for k, v in opposite.items()}


OPPOSITES: dict[str, frozenset[str]] = _expand(_OPPOSITES_RAW)


def _groups(raw: list[str]) -> dict[str, frozenset[int]]:
    groups: dict[str, set[int]] = {}
    for n, line in enumerate(raw):
        for word in line.split():
            groups.setdefault(stem(word), set()).add(n)
    return {k: frozenset(v) for k, v in groups.items()}


SYNONYM_GROUPS: dict[str, frozenset[int]] = _groups(_SYNONYMS_RAW)
# Prefixes that turn a word into its opposite (unlock, disagree, invalid, nonstop, deactivate).
NEGATING_PREFIXES = ("un", "dis", "in", "im", "il", "ir", "non", "de")
