"""The response model as evidence: words naming an answer value must be on both sides or neither."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, create_model

from semcache import SemanticCache
from semcache.embedding import SentenceTransformerEmbedder
from semcache.events import VetoEvent
from semcache.verifiers.schema_terms import MAX_VALUES, check_schema_terms, schema_terms


class Queue(str, Enum):
    billing = "billing"
    shipping = "shipping"
    technical = "technical"


class Item(BaseModel):
    name: str
    gift_wrapped: bool


class Ticket(BaseModel):
    queue: Queue
    priority: Literal["low", "normal", "urgent"]
    wants_refund: bool
    items: list[Item]
    note: str | None = None


def test_terms_come_from_small_enums_and_boolean_field_names() -> None:
    terms = schema_terms(Ticket)
    # Enum via $ref, Literal, a boolean field at the top and one in a nested list of models.
    assert {
        "bill",
        "shipp",
        "technic",
        "low",
        "norm",
        "urgent",
        "refund",
        "gift",
        "wrapp",
    } <= terms
    # Free-text fields and field names of other types give nothing.
    assert not {"note", "name", "queue", "priority", "items", "wants"} & terms


def test_a_word_several_values_of_one_field_share_is_no_evidence() -> None:
    Status = create_model(
        "Status", status=(Literal["card_lost", "card_stolen", "card_arrival"], ...)
    )
    assert schema_terms(Status) == {"lost", "stolen", "arriv"}


def test_a_taxonomy_of_many_values_gives_no_evidence() -> None:
    labels = tuple(f"topic_{chr(97 + i)}{chr(97 + i)}{chr(97 + i)}" for i in range(MAX_VALUES + 1))
    Many = create_model("Many", label=(Literal[labels], ...))  # type: ignore[valid-type]
    Few = create_model("Few", label=(Literal[labels[:MAX_VALUES]], ...))  # type: ignore[valid-type]
    assert schema_terms(Many) == frozenset()
    assert len(schema_terms(Few)) == MAX_VALUES


def test_a_term_on_one_side_only_vetoes_and_inflections_match() -> None:
    terms = schema_terms(Ticket)
    query = "My blender arrived broken and it's urgent."
    veto = check_schema_terms(query, "My blender arrived broken.", terms)
    assert not veto.accept and veto.stage == "schema" and "urgent" in veto.reason
    assert "only in the cached prompt" in check_schema_terms("a b", "a b urgently", terms).reason
    assert check_schema_terms("I was refunded twice", "Refunds: I got two", terms).accept
    assert check_schema_terms("Where is my parcel?", "Where's my parcel", terms).accept
    assert check_schema_terms("it's urgent", "urgent!", frozenset()).accept


URGENT = "The desk lamp from my order arrived with a cracked base. It's urgent, please."
PLAIN = "The desk lamp from my order arrived with a cracked base, please."


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_through_the_cache_a_schema_word_makes_a_miss(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    stored = Ticket(queue=Queue.shipping, priority="normal", wants_refund=False, items=[])
    q, c = embedder.embed([URGENT, PLAIN])
    similarity = float(q @ c)
    vetoes: list[VetoEvent] = []
    with SemanticCache(tmp_path / "s.db", embedder=embedder, threshold=similarity - 0.01) as cache:
        cache.store(_ask(PLAIN), Ticket, stored)
        cache.events.on(vetoes.append, VetoEvent)
        assert cache.lookup(_ask(URGENT), Ticket) is None
    assert [v.stage for v in vetoes] == ["schema"]
    # The rules alone let it through: the schema is the evidence here.
    with SemanticCache(
        tmp_path / "s.db", embedder=embedder, threshold=similarity - 0.01, schema_evidence=False
    ) as cache:
        hit = cache.lookup(_ask(URGENT), Ticket)
        assert hit is not None and hit.value == stored
