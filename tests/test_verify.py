"""The verification stage inside lookups: vetoes, their records, feedback from users."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from semcache import SemanticCache
from semcache.verifiers.base import AcceptAll, Chain, Verdict


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class DigitsMustMatch:
    """A test verifier with an observable rule: the digits in both texts must be equal."""

    name = "digits"

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        a = "".join(c for c in query if c.isdigit())
        b = "".join(c for c in candidate if c.isdigit())
        return Verdict(a == b, f"digits differ: {a} vs {b}" if a != b else "")


def test_a_veto_turns_a_candidate_into_a_miss_and_is_recorded(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, verifier=DigitsMustMatch(), threshold=0.8) as c:
        c.store(user("Where is order 1234?"), Answer, Answer(text="1234"))
        assert c.lookup(user("Where is order 1235?"), Answer) is None
        hit = c.lookup(user("where is order 1234"), Answer)
        assert hit is not None and hit.tier == "semantic"
        c.flush()
        rows = (
            c.db.connection()
            .execute("SELECT query, candidate, stage, reason, similarity FROM vetoes")
            .fetchall()
        )
    assert len(rows) == 1
    query, candidate, stage, reason, similarity = rows[0]
    assert (query, candidate, stage) == ("Where is order 1235?", "Where is order 1234?", "digits")
    assert reason == "digits differ: 1235 vs 1234" and similarity >= 0.8


def test_without_verification_the_look_alike_is_served(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, verifier=None, threshold=0.8) as c:
        c.store(user("Where is order 1234?"), Answer, Answer(text="1234"))
        hit = c.lookup(user("Where is order 1235?"), Answer)
        assert hit is not None and hit.value.text == "1234"  # what the verifier is there to stop


def test_chain_reports_the_vetoing_stage() -> None:
    chain = Chain([AcceptAll(), DigitsMustMatch()])
    verdict = chain.verify("order 1", "order 2", 0.99)
    assert not verdict.accept and verdict.stage == "digits" and chain.name == "none+digits"
    assert chain.verify("order 1", "order 1", 0.99).accept


def test_a_hit_marked_wrong_is_never_served_for_that_query_again(
    db_path: Path, embedder: Any
) -> None:
    with SemanticCache(db_path, embedder=embedder, verifier=None, threshold=0.8) as c:
        c.store(user("How do I reset my password?"), Answer, Answer(text="reset"))
        hit = c.lookup(user("How can I reset my password?"), Answer)
        assert hit is not None and hit.query == "How can I reset my password?"
        c.mark_wrong(hit, note="user complained")
        assert c.lookup(user("How can I reset my password?"), Answer) is None
        assert c.lookup(user("how can I reset my password"), Answer) is None  # near-duplicate
        other = c.lookup(user("I forgot my password, how do I reset it?"), Answer)
        assert other is not None  # still serves queries it was not marked wrong for
        note = c.db.connection().execute("SELECT note, candidate FROM feedback").fetchone()
        assert note == ("user complained", "How do I reset my password?")


def test_an_exact_hit_marked_wrong_is_deleted(cache: SemanticCache) -> None:
    cache.store(user("How do I reset my password?"), Answer, Answer(text="wrong"))
    hit = cache.lookup(user("How do I reset my password?"), Answer)
    assert hit is not None and hit.tier == "exact"
    cache.mark_wrong(hit)
    assert len(cache) == 0
    assert cache.lookup(user("How do I reset my password?"), Answer) is None
