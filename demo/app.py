"""The demo's instructor app: extract a customer-support ticket into a typed ``Ticket``.

This is the workload semcache sits in front of in ``make demo``. It lives in its own module so the
stub provider, the runner, the data generator and the tests all agree on one schema, one system
prompt and one way of reading ``data/tickets.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_PATH = REPO_ROOT / "data" / "tickets.jsonl"
MODEL = "gpt-4o-mini"

Kind = Literal["original", "repeat", "paraphrase", "lookalike"]
KINDS: tuple[Kind, ...] = ("original", "repeat", "paraphrase", "lookalike")

# The shop's catalogue. Tickets name products loosely ("my buds", "the kettle"); the extraction
# maps them onto these canonical names so downstream routing can group by product.
PRODUCTS: tuple[str, ...] = (
    "air fryer",
    "backpack",
    "blender",
    "bluetooth speaker",
    "coffee grinder",
    "desk lamp",
    "e-reader",
    "electric kettle",
    "espresso machine",
    "fitness tracker",
    "gaming mouse",
    "laptop stand",
    "mechanical keyboard",
    "monitor",
    "noise-cancelling headphones",
    "office chair",
    "phone case",
    "portable charger",
    "rain jacket",
    "robot vacuum",
    "running shoes",
    "security camera",
    "smart thermostat",
    "smart watch",
    "standing desk",
    "tablet",
    "usb-c hub",
    "water bottle",
    "webcam",
    "wireless earbuds",
    "yoga mat",
)


class Category(str, Enum):
    """Which support queue the ticket is routed to."""

    billing = "billing"
    shipping = "shipping"
    account = "account"
    technical = "technical"
    refund = "refund"


class Priority(str, Enum):
    """How fast a human has to look at the ticket."""

    low = "low"
    medium = "medium"
    high = "high"
    urgent = "urgent"


class Ticket(BaseModel):
    """The structured record extracted from one customer message."""

    category: Category = Field(description="The support queue, following the rules given.")
    priority: Priority = Field(description="How urgent the ticket is, following the rules given.")
    order_id: str | None = Field(
        description='The order number exactly as written, e.g. "A-10423"; null if none is named.'
    )
    product: str | None = Field(
        description="The canonical catalogue name of the product, lower-case; null if none."
    )
    wants_refund: bool = Field(description="True only if the customer asks for money back.")


# The rules are spelled out so a real model and the hand-labelled data file agree on the edge
# cases (a replacement is not a refund, "no rush" lowers priority, a double charge is billing).
SYSTEM_PROMPT = f"""You triage customer-support messages for an online electronics and \
home-goods shop. Extract one ticket from the customer's message.

category:
- billing: charges, invoices, receipts, payment methods, billing details, coupons, prices, gift \
cards, subscriptions and memberships (including asking for a wrong or duplicate charge to be \
reversed).
- shipping: delivery and tracking, late or lost parcels, delivery addresses and notes, items \
damaged in transit or the wrong item delivered when the customer wants a replacement.
- account: login, passwords, two-factor codes, email, phone or profile changes, newsletters, \
closing or merging accounts, suspended or hacked accounts.
- technical: a product or the app does not work as it should or the customer asks how to use it: \
defects, setup, pairing, settings, firmware (including asking for a repair or a replacement of a \
faulty product).
- refund: the customer wants to return a product or wants their money back for a product or an \
order (including cancelled and lost orders).

priority (use the first rule that applies):
1. low: the customer says there is no rush or that it is not urgent.
2. urgent: the customer says it is urgent or needed today/now/immediately/ASAP, or reports a \
security problem (account hacked, password changed by someone else, purchases or charges they \
did not make).
3. high: the customer cannot use the product, the service or their account at all, a parcel is \
lost, or they were charged twice.
4. medium: something is wrong but it is an inconvenience (late parcel, partial defect, wrong \
size, colour or item, damage on arrival, wrong charge or invoice), or a return or refund request.
5. low: questions and requests where nothing is wrong.

order_id: the order number exactly as written (format A-12345), or null if the message names none.
product: the catalogue name of the product the ticket is about, or null if it names none (the \
app, a membership or a gift card are not products). Catalogue: {", ".join(PRODUCTS)}.
wants_refund: true only if the customer asks for their money back (a refund, a reimbursement, a \
reversed charge, store credit); false if they want a replacement, a repair, an answer, or say \
they do not want a refund."""


@dataclass(frozen=True)
class TicketRequest:
    """One line of the request stream: the customer's text and the answer it must get."""

    id: int
    group: str
    kind: Kind
    text: str
    answer: dict[str, Any]


def load_stream(path: Path = DATA_PATH) -> list[TicketRequest]:
    """Read the request stream in file order, validating every answer against ``Ticket``.

    Validation happens here so a typo in the data file fails loudly at load time instead of
    showing up later as a mysterious "wrong answer" in the demo report.
    """
    requests: list[TicketRequest] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            if row["kind"] not in KINDS:
                raise ValueError(f"{path}:{line_no}: unknown kind {row['kind']!r}")
            answer = Ticket.model_validate(row["answer"]).model_dump(mode="json")
            if answer != row["answer"]:
                raise ValueError(f"{path}:{line_no}: answer is not in canonical form")
            if answer["product"] is not None and answer["product"] not in PRODUCTS:
                raise ValueError(f"{path}:{line_no}: {answer['product']!r} is not in PRODUCTS")
            requests.append(
                TicketRequest(int(row["id"]), row["group"], row["kind"], row["text"], answer)
            )
    return requests


def answers_by_text(requests: list[TicketRequest]) -> dict[str, dict[str, Any]]:
    """Map each distinct text to its answer; the stub provider answers from this table.

    Raises if one text carries two different answers, which would make the "right answer"
    ambiguous and the cache's correctness unmeasurable.
    """
    table: dict[str, dict[str, Any]] = {}
    for request in requests:
        previous = table.setdefault(request.text, request.answer)
        if previous != request.answer:
            raise ValueError(f"text of request {request.id} has two different answers")
    return table
