"""Build ``data/pairs/pairs.jsonl`` from the hand-written families in ``families.py``.

Every pair is a request a cache could see next to an earlier one, labeled 1 when both must get the
same answer and 0 when serving one for the other would be wrong. For each family this script fills
the slots with values written below (a fixed seed per family, so the output never changes), then:

* paraphrases (label 1): two variants of the family with the same slot values, and one variant
  against a surface-only rewrite of itself (casing, punctuation, contractions, a greeting);
* slot negatives (label 0): the same request with one slot value changed the way look-alikes do
  in practice (A-10578 / A-10587, $49.99 / $45.99, March 3 / March 4, another city);
* swaps (label 0): two slots of one type exchanged (from Paris to Rome / from Rome to Paris);
* contrasts (label 0): the family's template pairs that differ in negation, antonym, question word
  or a value left out.

**Split.** Whole families go to one side: the families of each task alternate train, test, train,
... in the order of ``FAMILIES``. No template, wording or slot filling is on both sides, so anything
tuned on ``train`` is scored on requests it never saw. ``--check`` verifies the file is up to date.

Run: ``python data/pairs/build.py`` (writes pairs.jsonl next to this file).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from families import FAMILIES

OUT = Path(__file__).resolve().parent / "pairs.jsonl"
SEED = 3_2024
GROUPS_PER_FAMILY = 10

# Which hard-negative kind changing one value of each slot type makes.
SLOT_KIND = {
    **dict.fromkeys(
        ("order", "email", "phone", "code", "invoice", "po", "user", "ip", "version", "zip"),
        "identifier",
    ),
    **dict.fromkeys(("amount", "n", "age", "stars", "score", "pct", "grams"), "number"),
    **dict.fromkeys(("date", "day", "time", "when"), "date"),
}
NOT_PERTURBED = {"unit", "street"}  # only swapped, or fixed context

# fmt: off
VALUES: dict[str, list[str]] = {
    "product": [
        "air fryer", "desk lamp", "office chair", "wireless earbuds", "coffee grinder",
        "smart watch", "fitness tracker", "e-reader", "blender", "rain jacket", "standing desk",
        "bluetooth speaker", "electric kettle", "laptop stand", "webcam", "yoga mat",
        "robot vacuum", "tablet", "monitor", "phone case",
    ],
    "person": [
        "Maria Lopez", "Tom Becker", "Aisha Khan", "Jonas Weber", "Li Wei", "Sofia Rossi",
        "David Cohen", "Emma Dubois", "Kenji Sato", "Olga Petrova", "Pedro Alves", "Grace Okafor",
    ],
    "scientist": [
        "Marie Curie", "Albert Einstein", "Niels Bohr", "Dorothy Hodgkin", "Richard Feynman",
        "Barbara McClintock", "Max Planck", "Linus Pauling", "Enrico Fermi", "Lise Meitner",
    ],
    "org": [
        "the Red Cross", "Wikipedia", "Amnesty International", "the World Wildlife Fund", "IKEA",
        "Lego", "Spotify", "Patagonia", "Greenpeace", "Oxfam",
    ],
    "company": [
        "Acme Corp", "Globex", "Initech", "Northwind Traders", "Contoso", "Fabrikam", "Hooli",
        "Vandelay Industries", "Soylent Ltd", "Umbrella Logistics",
    ],
    "app": ["PhotoBox", "NoteKeeper", "TaskFlow", "MapMate", "BudgetBee", "ChatterBox", "FitLog"],
    "os": ["Android 14", "iOS 17", "Windows 11", "macOS Sonoma", "Ubuntu 22.04", "ChromeOS"],
    "city": [
        "Paris", "Rome", "Berlin", "Madrid", "Lisbon", "Vienna", "Prague", "Oslo", "Dublin",
        "Athens", "Warsaw", "Zurich", "Boston", "Chicago", "Toronto", "Seoul", "Sydney", "Lima",
    ],
    "store": [
        "Apple Store", "public library", "post office", "farmers market", "pharmacy",
        "bike shop", "city museum", "swimming pool",
    ],
    "thing": [
        "password", "PIN", "router", "username", "security questions", "voicemail PIN",
        "email password", "smart TV",
    ],
    "device": ["laptop", "phone", "printer", "router", "tablet", "hearing aid", "car charger"],
    "team": [
        "Arsenal", "Bayern Munich", "Ajax", "Benfica", "Celtic", "Porto", "Lyon", "Napoli",
        "Sevilla", "Galatasaray",
    ],
    "card": ["debit", "credit", "Visa", "Mastercard", "business", "travel"],
    "topic": ["housing", "transit", "climate", "parking", "school", "bike lane"],
    "feature": [
        "wireless charging", "dark mode", "offline maps", "voice control", "fast charging",
        "NFC payments", "sleep tracking", "noise cancellation",
    ],
    "street": ["12 Baker Street", "221 Oak Avenue", "7 Rue Cler", "45 Hauptstrasse", "3 Elm Road"],
    "when": ["today", "tomorrow", "by Friday", "tonight", "next week", "this weekend", "by Monday"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
}
CAPITALS = {
    "France": "Paris", "Italy": "Rome", "Germany": "Berlin", "Spain": "Madrid",
    "Portugal": "Lisbon", "Austria": "Vienna", "Norway": "Oslo", "Ireland": "Dublin",
    "Greece": "Athens", "Poland": "Warsaw", "Japan": "Tokyo", "Kenya": "Nairobi", "Peru": "Lima",
    "Canada": "Ottawa", "Australia": "Canberra", "Chile": "Santiago", "Egypt": "Cairo",
}
UNITS = [
    ("miles", "kilometers"), ("kilograms", "pounds"), ("liters", "gallons"),
    ("Celsius", "Fahrenheit"), ("inches", "centimeters"), ("feet", "meters"),
    ("ounces", "grams"), ("cups", "milliliters"),
]  # fmt: skip
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]  # fmt: skip
FIRST = ["maria", "tom", "aisha", "jonas", "li", "sofia", "david", "emma", "kenji", "olga"]
LAST = ["lopez", "becker", "khan", "weber", "wei", "rossi", "cohen", "dubois", "sato", "petrova"]
DOMAINS = ["example.com", "mail.example.org", "acme.io", "northwind.net"]
# fmt: on


def slot_type(name: str) -> str:
    return name.split("_")[0]


def digits_changed(value: str, rng: random.Random) -> str:
    """Change the value the way a look-alike does: swap two neighbouring digits, or change one."""
    spots = [i for i, c in enumerate(value) if c.isdigit()]
    pairs = [(i, j) for i, j in itertools.pairwise(spots) if j == i + 1 and value[i] != value[j]]
    if pairs and rng.random() < 0.5:
        i, j = rng.choice(pairs)
        return value[:i] + value[j] + value[i] + value[j + 1 :]
    i = rng.choice(spots)
    choices = [d for d in "0123456789" if d != value[i] and not (d == "0" and i == spots[0])]
    return value[:i] + rng.choice(choices) + value[i + 1 :]


def make_date(rng: random.Random, style: int, month: int, day: int) -> str:
    name = MONTHS[month]
    return [
        f"{name} {day}",
        f"{day} {name}",
        f"{name} {day}, 2025",
        f"2025-{month + 1:02d}-{day:02d}",
        f"{name} {day}th" if day not in (1, 2, 3, 21, 22, 23) else f"{name} {day}",
    ][style]


def new_value(kind: str, rng: random.Random) -> Any:
    """A fresh slot value of type ``kind``; dates keep their parts so they can be perturbed."""
    if kind in VALUES:
        return rng.choice(VALUES[kind])
    if kind == "country":
        return rng.choice(sorted(CAPITALS))
    if kind == "order":
        return f"A-{rng.randint(10000, 19999)}"
    if kind == "invoice":
        return f"INV-2025-{rng.randint(100, 999):04d}"
    if kind == "po":
        return f"PO-{rng.randint(40000, 69999)}"
    if kind == "code":
        return rng.choice(["E-{}", "ERR_{}", "0x8007{}"]).format(rng.randint(1000, 9899))
    if kind == "email":
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(1, 99)}"])
        return f"{local}@{rng.choice(DOMAINS)}"
    if kind == "phone":
        return rng.choice(["+1 415 555 {:04d}", "(212) 555-{:04d}", "+44 20 7946 {:04d}"]).format(
            rng.randint(100, 9899)
        )
    if kind == "user":
        return f"{rng.choice(FIRST)[0]}{rng.choice(LAST)}{rng.randint(2, 98)}"
    if kind == "ip":
        return f"{rng.choice(['10.0', '192.168', '172.16'])}.{rng.randint(0, 40)}.{rng.randint(2, 250)}"
    if kind == "version":
        return f"{rng.randint(1, 9)}.{rng.randint(0, 14)}.{rng.randint(0, 9)}"
    if kind == "zip":
        return f"{rng.randint(10000, 98999)}"
    if kind == "amount":
        cents = rng.choice([".99", ".50", ""])
        number = f"{rng.randint(12, 1480)}{cents}"
        return rng.choice(["${}", "€{}", "£{}", "{} USD"]).format(number)
    if kind in ("n", "age", "stars", "pct", "score"):
        low, high = {"n": (2, 9), "age": (18, 79), "stars": (2, 5), "pct": (2, 19)}.get(
            kind, (0, 0)
        )
        if kind == "score":
            return f"{rng.randint(1, 4)}-{rng.randint(0, 3)}"
        return f"{rng.randint(low, high)}%" if kind == "pct" else str(rng.randint(low, high))
    if kind == "grams":
        return str(rng.randrange(50, 325, 25))
    if kind == "unit":
        return "unit"  # filled as a pair by the caller
    if kind == "time":
        return rng.choice(["{}am", "{}pm", "{}:30", "{}:15 pm"]).format(rng.randint(1, 11))
    if kind == "date":
        return ("date", rng.randint(0, 4), rng.randint(0, 11), rng.randint(1, 22))
    raise KeyError(kind)


def render(value: Any) -> str:
    if isinstance(value, tuple) and value and value[0] == "date":
        return make_date(random.Random(0), value[1], value[2], value[3])
    return str(value)


def perturbed(kind: str, value: Any, rng: random.Random) -> Any:
    """A different value of the same slot that a look-alike request would carry."""
    if kind == "date":
        _, style, month, day = value
        if rng.random() < 0.7:
            return ("date", style, month, day + rng.choice([-2, -1, 1, 2, 3]))
        return ("date", style, (month + rng.randint(1, 10)) % 12, day)
    if kind == "grams":
        return str(int(value) + rng.choice([25, 50, -25]))
    if kind in ("n", "stars", "age"):
        return str(int(value) + rng.choice([1, 2, -1]) if int(value) > 2 else int(value) + 1)
    if kind in VALUES or kind == "country":
        pool = VALUES.get(kind) or sorted(CAPITALS)
        return rng.choice([v for v in pool if v != value])
    if kind == "email":
        local, domain = value.split("@")
        if rng.random() < 0.5:
            return f"{local}@{rng.choice([d for d in DOMAINS if d != domain])}"
        i = rng.randrange(1, len(local))
        return f"{local[:i]}{'x' if local[i] != 'x' else 'y'}{local[i + 1 :]}@{domain}"
    if kind == "user":
        return digits_changed(value, rng)
    changed = digits_changed(value, rng)
    return changed if changed != value else value + "1"


CONTRACTIONS = [
    ("do not", "don't"), ("does not", "doesn't"), ("is not", "isn't"), ("cannot", "can't"),
    ("what is", "what's"), ("it is", "it's"), ("I am", "I'm"), ("I would", "I'd"),
    ("where is", "where's"), ("has not", "hasn't"), ("have not", "haven't"), ("I have", "I've"),
]  # fmt: skip


def surface(text: str, rng: random.Random, templated: bool) -> str:
    """A rewrite that changes only the surface: casing, punctuation, contractions, greetings."""
    out = text
    for long, short in CONTRACTIONS:
        pattern = re.compile(rf"\b{re.escape(long)}\b", re.I)
        if pattern.search(out):
            out = pattern.sub(short, out)
        else:
            out = re.compile(rf"\b{re.escape(short)}\b", re.I).sub(long, out)
    steps = ["lower", "strip", "greet"] if not templated else ["lower", "strip"]
    for step in rng.sample(steps, rng.randint(1, len(steps))):
        if step == "lower":
            out = out.lower()
        elif step == "strip":
            out = out.rstrip(".?!'\"") if out[-1:] in ".?!" else out + "."
        elif step == "greet":
            out = rng.choice(
                ["Hi, {}", "Hello! {}", "{} Thanks!", "Quick one: {}", "{} thx"]
            ).format(out)
    return out if out != text else text.upper()


def fill(template: str, slots: dict[str, Any]) -> str:
    return template.format(**{k: render(v) for k, v in slots.items()})


def family_pairs(index: int, family: dict[str, Any], split: str) -> list[dict[str, Any]]:
    rng = random.Random(SEED * 1000 + index)
    templates = [*family["variants"], *(t for c in family["contrasts"] for t in c[1:])]
    names = sorted({n for t in templates for n in re.findall(r"{(\w+)}", t)})
    templated = bool(family.get("templated"))
    rows: list[dict[str, Any]] = []

    def add(a: str, b: str, label: int, kind: str, how: str, group: int) -> None:
        if rng.random() < 0.5:
            a, b = b, a
        rows.append({
            "a": a, "b": b, "label": label, "kind": kind, "task": family["task"],
            "split": split, "family": family["name"], "group": f"{family['name']}/{group}",
            "templated": templated, "how": how,
        })  # fmt: skip

    for group in range(GROUPS_PER_FAMILY):
        slots: dict[str, Any] = {}
        for name in names:
            kind = slot_type(name)
            while True:
                value = new_value(kind, rng)
                if value not in slots.values() or kind == "unit":
                    break
            slots[name] = value
        dates = [n for n in names if slot_type(n) == "date"]
        for previous, name in itertools.pairwise(dates):  # one style, in order (check-in first)
            _, style, month, day = slots[previous]
            slots[name] = ("date", style, month, day + rng.randint(1, 5))
        if "country" in slots and "city" in slots:
            slots["city"] = CAPITALS[slots["country"]]
        if "unit_a" in slots:
            slots["unit_a"], slots["unit_b"] = rng.choice(UNITS)
        variants = [fill(t, slots) for t in family["variants"]]
        combos = list(itertools.combinations(range(len(variants)), 2))
        for i, j in rng.sample(combos, min(5, len(combos))):
            b = surface(variants[j], rng, templated) if rng.random() < 0.3 else variants[j]
            add(variants[i], b, 1, "paraphrase", "reworded", group)
        i = rng.randrange(len(variants))
        add(variants[i], surface(variants[i], rng, templated), 1, "paraphrase", "surface", group)

        used = [n for n in names if "{" + n + "}" in " ".join(family["variants"])]
        candidates = [n for n in used if slot_type(n) not in NOT_PERTURBED]
        for name in rng.sample(candidates, min(3, len(candidates))):
            kind = slot_type(name)
            value = perturbed(kind, slots[name], rng)
            while value in slots.values():  # "Benfica beat Benfica" is not a look-alike
                value = perturbed(kind, value, rng)
            changed = dict(slots, **{name: value})
            i = rng.randrange(len(variants))
            j = i if rng.random() < 0.6 else rng.randrange(len(variants))
            b = fill(family["variants"][j], changed)
            add(variants[i], b, 0, SLOT_KIND.get(kind, "unrelated_close"), f"slot:{name}", group)
        if "swap" in family:
            x, y = family["swap"]
            swapped = dict(slots, **{x: slots[y], y: slots[x]})
            i = rng.randrange(len(variants))
            j = i if rng.random() < 0.6 else rng.randrange(len(variants))
            add(variants[i], fill(family["variants"][j], swapped), 0, "entity_swap", "swap", group)
        for kind, left, right in family["contrasts"]:
            a, b = fill(left, slots), fill(right, slots)
            if rng.random() < 0.25:
                a, b = a.lower(), b.lower()
            add(a, b, 0, kind, "contrast", group)
    return rows


def build() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    position: Counter[str] = Counter()
    for index, family in enumerate(FAMILIES):
        split = "train" if position[family["task"]] % 2 == 0 else "test"
        position[family["task"]] += 1
        rows.extend(family_pairs(index, family, split))
    seen: set[tuple[str, str]] = set()
    unique = []
    for row in rows:
        key = (row["a"], row["b"])
        if row["a"] != row["b"] and key not in seen and key[::-1] not in seen:
            seen.add(key)
            unique.append(row)
    for n, row in enumerate(unique):
        row["id"] = n
    return unique


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify pairs.jsonl is up to date")
    args = parser.parse_args()
    rows = build()
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"{OUT} is out of date: run python {Path(__file__).name}")
        print(f"{OUT.name} is up to date ({len(rows)} pairs)")
        return
    OUT.write_text(text, encoding="utf-8")
    counts = Counter((r["split"], r["kind"]) for r in rows)
    for (split, kind), n in sorted(counts.items()):
        print(f"{split:5} {kind:15} {n}")
    print(f"{len(rows)} pairs written to {OUT}")


if __name__ == "__main__":
    main()
