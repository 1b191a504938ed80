"""Build ``data/tickets.jsonl`` from the hand-written ``demo/tickets_source.json``.

The source file is where the tickets were written: each original message with its answer, its
paraphrases (same answer) and its look-alikes (near-identical wording, one or two answer fields
changed). This script only expands and orders them into a request stream: it adds exact repeats
and interleaves everything with a fixed seed so the demo sees the same stream on every machine.
It also runs cheap consistency checks, because a wrong label would be reported as a cache error.

Run ``python demo/build_data.py`` to rewrite the file, ``--check`` to verify it is up to date.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.app import DATA_PATH, PRODUCTS, Ticket

SOURCE_PATH = Path(__file__).resolve().parent / "tickets_source.json"
SEED = 20240611
ORDER_ID = re.compile(r"\bA-\d{5}\b")
NO_RUSH = ("no rush", "not urgent")
URGENT_CUES = (
    "urgent",
    "asap",
    "today",
    "now",
    "immediately",
    "right away",
    "hack",
    "never placed",
    "never made",
    "didn't make",
    "didn't do it",
    "wasn't me",
    "weren't me",
)


def _label_problems(text: str, answer: dict[str, Any]) -> list[str]:
    """Mechanical checks a label must pass; they catch slips, not judgement calls."""
    problems = []
    lowered = text.lower()
    ids = ORDER_ID.findall(text)
    expected_ids = [] if answer["order_id"] is None else [answer["order_id"]]
    if ids != expected_ids:
        problems.append(f"order ids in text {ids} != answer {expected_ids}")
    product = answer["product"]
    if product is None:
        named = [name for name in PRODUCTS if name in lowered]
        if named:
            problems.append(f"product is null but the text names {named}")
    elif not any(
        part.rstrip("s") in lowered for part in re.split(r"[ -]", product) if len(part) >= 3
    ):
        problems.append(f"product {product!r} is not mentioned")
    if any(cue in lowered for cue in NO_RUSH) and answer["priority"] != "low":
        problems.append("says no rush but priority is not low")
    if answer["priority"] == "urgent" and not any(cue in lowered for cue in URGENT_CUES):
        problems.append("priority is urgent without an urgency or security cue")
    return problems


def _row(group: str, kind: str, text: str, answer: dict[str, Any]) -> dict[str, Any]:
    canonical = Ticket.model_validate(answer).model_dump(mode="json")
    problems = _label_problems(text, canonical)
    if problems:
        raise ValueError(f"{group} {kind} {text!r}: " + "; ".join(problems))
    return {"group": group, "kind": kind, "text": text, "answer": canonical}


def _family(index: int, entry: dict[str, Any], repeats: int) -> list[dict[str, Any]]:
    """The original first, then its repeats, paraphrases and look-alikes (order fixed later)."""
    group = f"t{index:02d}"
    original = _row(group, "original", entry["text"], entry["answer"])
    rows = [original]
    rows += [_row(group, "repeat", entry["text"], entry["answer"]) for _ in range(repeats)]
    if len(set(entry["paraphrases"])) != len(entry["paraphrases"]):
        raise ValueError(f"{group}: duplicate paraphrase")
    for text in entry["paraphrases"]:
        if text == entry["text"]:
            raise ValueError(f"{group}: a paraphrase repeats the original text")
        rows.append(_row(group, "paraphrase", text, entry["answer"]))
    for number, lookalike in enumerate(entry["lookalikes"], start=1):
        changes = lookalike["changes"]
        unchanged = [
            field for field, value in changes.items() if original["answer"][field] == value
        ]
        if not changes or unchanged:
            raise ValueError(f"{group}: look-alike {number} changes nothing in {unchanged}")
        answer = {**original["answer"], **changes}
        rows.append(_row(f"{group}-la{number}", "lookalike", lookalike["text"], answer))
    return rows


def build_stream(source: Path = SOURCE_PATH, seed: int = SEED) -> list[dict[str, Any]]:
    """Expand and interleave the source into the stream, deterministically for a given seed.

    Every family's items are shuffled into the stream together; then the original takes the
    earliest of its family's slots, so it is always seen before its repeats, paraphrases and
    look-alikes (a cache can only hit on something it has stored).
    """
    entries = json.loads(source.read_text(encoding="utf-8"))
    rng = random.Random(seed)
    repeat_counts = [0] * 10 + [2] * 10 + [1] * (len(entries) - 20)
    rng.shuffle(repeat_counts)
    families = [
        _family(index, entry, repeats)
        for index, (entry, repeats) in enumerate(zip(entries, repeat_counts, strict=True), start=1)
    ]
    slots = [
        (family_no, item_no)
        for family_no, family in enumerate(families)
        for item_no in range(len(family))
    ]
    rng.shuffle(slots)
    positions: dict[int, list[int]] = {}
    for position, (family_no, _) in enumerate(slots):
        positions.setdefault(family_no, []).append(position)
    stream: list[dict[str, Any] | None] = [None] * len(slots)
    for family_no, family in enumerate(families):
        followers = family[1:]
        rng.shuffle(followers)
        for position, row in zip(positions[family_no], [family[0], *followers], strict=True):
            stream[position] = row
    rows = [{"id": number, **row} for number, row in enumerate(stream, start=1) if row is not None]
    answers: dict[str, dict[str, Any]] = {}
    for row in rows:
        if answers.setdefault(row["text"], row["answer"]) != row["answer"]:
            raise ValueError(f"one text, two answers: {row['text']!r}")
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """One JSON object per line, keys in a fixed order, UTF-8 kept readable."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    """Write the data file, or with ``--check`` fail if it differs from what the source gives."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_PATH)
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    args = parser.parse_args(argv)
    rows = build_stream()
    text = render(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    summary = ", ".join(f"{kind}: {count}" for kind, count in counts.items())
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date; run python demo/build_data.py", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date ({len(rows)} lines; {summary})")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(rows)} lines; {summary})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
