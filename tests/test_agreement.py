"""Answer agreement: which parts of a stored answer are compared, and when neighbours disagree."""

from __future__ import annotations

import json

from semcache.verifiers.agreement import PROSE_WORDS, decisive, disagrees


def test_labels_numbers_and_short_strings_are_decisive() -> None:
    a = decisive(json.dumps({"intent": "card_arrival", "priority": 2, "refund": True}))
    b = decisive(json.dumps({"refund": True, "priority": 2, "intent": "card_arrival"}))
    c = decisive(json.dumps({"intent": "card_delivery_estimate", "priority": 2, "refund": True}))
    assert a == b  # key order does not matter
    assert a != c


def test_prose_is_left_out_so_two_wordings_of_one_answer_agree() -> None:
    long_one = "You can reset it in the app under Settings, then Security, then PIN."
    long_two = "Open the app and go to Settings > Security > PIN to choose a new one."
    assert len(long_one.split()) > PROSE_WORDS
    a = decisive(json.dumps({"topic": "pin", "answer": long_one}))
    b = decisive(json.dumps({"topic": "pin", "answer": long_two}))
    assert a == b == json.dumps({"topic": "pin"})


def test_an_answer_of_prose_only_has_nothing_decisive() -> None:
    prose = "A long generated reply that says a great many things about the question."
    assert decisive(json.dumps({"answer": prose})) is None
    assert decisive(json.dumps({"items": [prose, prose]})) is None
    assert decisive("not json") is None


def test_nested_lists_and_objects_keep_their_decisive_parts() -> None:
    value = {"items": [{"sku": "A-1", "note": "x " * 20}, {"sku": "B-2"}], "total": 3}
    assert json.loads(decisive(json.dumps(value)) or "") == {
        "items": [{"sku": "A-1"}, {"sku": "B-2"}],
        "total": 3,
    }


def test_a_neighbour_within_the_margin_with_another_answer_disagrees() -> None:
    chosen = (0.93, '"a"')
    assert disagrees(chosen, (0.90, '"b"'), 0.05)
    assert not disagrees(chosen, (0.87, '"b"'), 0.05)  # farther than the margin
    assert not disagrees(chosen, (0.95, '"a"'), 0.05)  # same answer
    assert disagrees(chosen, (0.95, '"b"'), 0.0)  # a nearer one always counts


def test_unknown_answers_never_disagree() -> None:
    assert not disagrees((0.93, None), (0.93, '"b"'), 0.05)
    assert not disagrees((0.93, '"a"'), (0.93, None), 0.05)


# -- through the cache -------------------------------------------------------------------------

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Literal  # noqa: E402

import pytest  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from semcache import SemanticCache  # noqa: E402
from semcache.embedding import SentenceTransformerEmbedder  # noqa: E402
from semcache.events import VetoEvent  # noqa: E402
from semcache.verifiers import RuleVerifier  # noqa: E402
from semcache.verifiers.agreement import ANOTHER_INSTANCE  # noqa: E402
from semcache.verifiers.base import ACCEPT, Verdict  # noqa: E402


class Intent(BaseModel):
    intent: Literal["pin_reset", "pin_change", "card_lost"]


RESET = "How do I reset my card PIN?"
CHANGE = "How do I change my card PIN?"
QUERY = "How do I change or reset my card PIN?"  # between the two: 0.973 and 0.931


def _messages(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Classify the banking request."},
        {"role": "user", "content": text},
    ]


def _open(path: Path, embedder: SentenceTransformerEmbedder, **kwargs: object) -> SemanticCache:
    return SemanticCache(path, embedder=embedder, verifier=None, schema_evidence=False, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def sims(embedder: SentenceTransformerEmbedder) -> tuple[float, float]:
    q, reset, change = embedder.embed([QUERY, RESET, CHANGE])
    s_reset, s_change = float(q @ reset), float(q @ change)
    # The premise of these tests: the query is close to both stored requests, within the margin.
    assert abs(s_reset - s_change) <= 0.05, (s_reset, s_change)
    return s_reset, s_change


@pytest.fixture
def two_answers(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[Path]:
    path = tmp_path / "agree.db"
    with _open(path, embedder) as cache:
        cache.store(_messages(RESET), Intent, Intent(intent="pin_reset"), model="m")
        cache.store(_messages(CHANGE), Intent, Intent(intent="pin_change"), model="m")
    yield path


def test_neighbours_with_different_answers_make_a_miss(
    two_answers: Path, embedder: SentenceTransformerEmbedder, sims: tuple[float, float]
) -> None:
    threshold = min(sims) - 0.01
    vetoes: list[VetoEvent] = []
    with _open(two_answers, embedder, threshold=threshold) as cache:
        cache.events.on(vetoes.append, VetoEvent)
        assert cache.lookup(_messages(QUERY), Intent, model="m") is None
    assert [v.stage for v in vetoes] == ["agreement"]
    assert "another answer" in vetoes[0].reason
    with _open(two_answers, embedder, threshold=threshold, agreement_margin=None) as cache:
        hit = cache.lookup(_messages(QUERY), Intent, model="m")
        assert hit is not None and hit.similarity == pytest.approx(max(sims), abs=1e-5)


def test_a_rival_below_the_threshold_or_past_the_margin_does_not_count(
    two_answers: Path, embedder: SentenceTransformerEmbedder, sims: tuple[float, float]
) -> None:
    between = (min(sims) + max(sims)) / 2
    with _open(two_answers, embedder, threshold=between) as cache:
        assert cache.lookup(_messages(QUERY), Intent, model="m") is not None
    gap = abs(sims[0] - sims[1])
    with _open(two_answers, embedder, threshold=min(sims) - 0.01, agreement_margin=gap / 2) as c:
        assert c.lookup(_messages(QUERY), Intent, model="m") is not None


def test_neighbours_with_the_same_answer_agree(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, sims: tuple[float, float]
) -> None:
    with _open(tmp_path / "same.db", embedder, threshold=min(sims) - 0.01) as cache:
        cache.store(_messages(RESET), Intent, Intent(intent="pin_reset"), model="m")
        cache.store(_messages(CHANGE), Intent, Intent(intent="pin_reset"), model="m")
        hit = cache.lookup(_messages(QUERY), Intent, model="m")
        assert hit is not None and hit.value == Intent(intent="pin_reset")


class VetoText:
    """A user's verifier that refuses one stored text."""

    name = "veto-text"

    def __init__(self, text: str) -> None:
        self.text = text

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        return Verdict(False, "refused", self.name) if candidate == self.text else ACCEPT


def test_no_farther_answer_is_served_after_a_nearer_one_with_another_answer_is_vetoed(
    two_answers: Path, embedder: SentenceTransformerEmbedder, sims: tuple[float, float]
) -> None:
    nearest = RESET if sims[0] >= sims[1] else CHANGE
    stages: list[str] = []
    with SemanticCache(
        two_answers,
        embedder=embedder,
        verifier=VetoText(nearest),
        threshold=min(sims) - 0.01,
        schema_evidence=False,
    ) as cache:
        cache.events.on(lambda e: stages.append(e.stage), VetoEvent)  # type: ignore[attr-defined]
        assert cache.lookup(_messages(QUERY), Intent, model="m") is None
    assert stages == ["veto-text", "agreement"]
    with SemanticCache(
        two_answers,
        embedder=embedder,
        verifier=VetoText(nearest),
        threshold=min(sims) - 0.01,
        agreement_margin=None,
        schema_evidence=False,
    ) as cache:
        hit = cache.lookup(_messages(QUERY), Intent, model="m")
        assert hit is not None and hit.matched_prompt != nearest


def test_the_margin_is_checked(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> None:
    from semcache.errors import UsageError

    with pytest.raises(UsageError, match="agreement_margin"):
        _open(tmp_path / "x.db", embedder, agreement_margin=-0.1)


class Parcel(BaseModel):
    parcel: int
    status: Literal["in_transit", "delivered"]


def _parcel(i: int) -> str:
    return f"Please check the delivery status of parcel number {i} for customer {i * 7}"


def test_siblings_for_other_identifiers_are_no_rivals(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """Entries for other parcel numbers are vetoed by the rules as other instances of the
    request: their different answers must not stop a paraphrase from hitting its own entry."""
    query = _parcel(100012).lower() + "!"
    with SemanticCache(tmp_path / "parcels.db", embedder=embedder, threshold=0.85) as cache:
        for i in (100011, 100012, 100013, 100021):
            status = "delivered" if i % 2 else "in_transit"
            cache.store(
                [{"role": "user", "content": _parcel(i)}], Parcel, Parcel(parcel=i, status=status)
            )
        q, *stored = embedder.embed([query, _parcel(100011), _parcel(100012), _parcel(100013)])
        # The premise: siblings are within the margin of the entry the query should hit.
        own = float(q @ stored[1])
        assert max(float(q @ stored[0]), float(q @ stored[2])) >= own - 0.05
        hit = cache.lookup([{"role": "user", "content": query}], Parcel)
    assert hit is not None and hit.tier == "semantic" and hit.value.parcel == 100012
    # ... and the default rules veto them as other instances of the request.
    rules = RuleVerifier()
    for sibling, vector in ((100011, stored[0]), (100013, stored[2])):
        verdict = rules.verify(query, _parcel(sibling), float(q @ vector))
        assert not verdict.accept and verdict.stage in ANOTHER_INSTANCE
