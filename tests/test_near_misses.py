"""Near-miss labels: a miss just below the threshold, compared with the provider's answer.

The subtle parts: the label is taken only when the answer is stored (the wrapped client, the
direct ``lookup``/``store`` pair and ``memoize`` alike), costs no provider call, compares answers
field by field, records the verifier's verdict, stays bounded, and reaches old files.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Literal

import instructor
import pytest
from pydantic import BaseModel

from semcache import SemanticCache, UsageError, cache_hit
from semcache.verifiers import RuleVerifier
from semcache.verifiers.base import Verdict

from .conftest import FakeProvider, async_openai_client, openai_client

STORED = "How do I reset my password?"
NEAR = "I forgot my password, how can I reset it?"


class Answer(BaseModel):
    text: str


class Ticket(BaseModel):
    category: str
    priority: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def similarity(embedder: Any, a: str, b: str) -> float:
    va, vb = embedder.embed([a, b])
    return float(va @ vb)


def rows(cache: SemanticCache) -> list[dict[str, Any]]:
    cache.flush()
    cursor = cache.db.connection().execute("SELECT * FROM near_misses ORDER BY id")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture
def gap(embedder: Any) -> float:
    """The similarity of the two texts: thresholds are set relative to it."""
    value = similarity(embedder, STORED, NEAR)
    assert 0.6 < value < 0.97  # a paraphrase, not a duplicate
    return value


def open_cache(db_path: Path, embedder: Any, threshold: float, **options: Any) -> SemanticCache:
    options.setdefault("verifier", None)
    return SemanticCache(db_path, embedder=embedder, threshold=threshold, **options)


def test_wrapped_client_labels_an_agreeing_near_miss(
    db_path: Path, embedder: Any, gap: float
) -> None:
    provider = FakeProvider(answer=lambda body: {"text": "reset"})
    with open_cache(db_path, embedder, gap + 0.02) as c:
        client = c.wrap(instructor.from_openai(openai_client(provider)))
        client.create(model="m", response_model=Answer, messages=user(STORED))
        served = client.create(model="m", response_model=Answer, messages=user(NEAR))
        assert cache_hit(served) is None
        assert provider.count == 2  # the miss's own call, nothing more
        (row,) = rows(c)
    assert row["similarity"] == pytest.approx(gap, abs=1e-5)
    assert row["threshold"] == pytest.approx(gap + 0.02)
    assert (row["agree"], json.loads(row["differing_fields"]), row["stage"]) == (1, [], "")
    assert (row["query"], row["candidate"]) == (NEAR, STORED)
    assert json.loads(row["answer_json"]) == json.loads(row["candidate_answer_json"])


def test_disagreeing_fields_are_named(db_path: Path, embedder: Any, gap: float) -> None:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        urgent = "forgot" in body["messages"][-1]["content"]
        return {"category": "account", "priority": "high" if urgent else "low"}

    provider = FakeProvider(answer=answer)
    with open_cache(db_path, embedder, gap + 0.01) as c:
        client = c.wrap(instructor.from_openai(openai_client(provider)))
        client.create(model="m", response_model=Ticket, messages=user(STORED))
        client.create(model="m", response_model=Ticket, messages=user(NEAR))
        (row,) = rows(c)
    assert row["agree"] == 0 and json.loads(row["differing_fields"]) == ["priority"]
    assert json.loads(row["candidate_answer_json"])["priority"] == "low"


def test_outside_the_band_nothing_is_labelled(db_path: Path, embedder: Any, gap: float) -> None:
    with open_cache(db_path, embedder, gap + 0.06, near_miss_band=0.05) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        assert rows(c) == []


def test_no_labels_when_switched_off(db_path: Path, embedder: Any, gap: float) -> None:
    with open_cache(db_path, embedder, gap + 0.01, near_miss_band=None) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        assert rows(c) == []


def test_direct_lookup_then_store_labels(db_path: Path, embedder: Any, gap: float) -> None:
    with open_cache(db_path, embedder, gap + 0.01) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        assert rows(c) == []  # a store without a lookup before it labels nothing
        assert c.lookup(user(NEAR), Answer) is None
        assert rows(c) == []  # nothing until the answer is stored
        c.store(user(NEAR), Answer, Answer(text="something else"))
        (row,) = rows(c)
        assert row["agree"] == 0 and json.loads(row["differing_fields"]) == ["text"]
        c.store(user(NEAR), Answer, Answer(text="stored again"))
        assert len(rows(c)) == 1  # one label per near miss, not per store


def test_a_lookup_that_is_never_answered_labels_nothing(
    db_path: Path, embedder: Any, gap: float
) -> None:
    with open_cache(db_path, embedder, gap + 0.01) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user("What are your opening hours?"), Answer, Answer(text="9 to 5"))
        assert rows(c) == []


def test_memoize_labels(db_path: Path, embedder: Any, gap: float) -> None:
    with open_cache(db_path, embedder, gap + 0.01) as c:

        @c.memoize(text="question")
        def answer(question: str) -> Answer:
            return Answer(text="reset")

        answer(STORED)
        answer(NEAR)
        (row,) = rows(c)
        assert (row["query"], row["agree"]) == (NEAR, 1)


def test_read_only_calls_take_no_label(db_path: Path, embedder: Any, gap: float) -> None:
    provider = FakeProvider(answer=lambda body: {"text": "reset"})
    with open_cache(db_path, embedder, gap + 0.01) as c:
        client = c.wrap(instructor.from_openai(openai_client(provider)))
        client.create(model="m", response_model=Answer, messages=user(STORED))
        client.create(model="m", response_model=Answer, messages=user(NEAR), semcache_write=False)
        assert rows(c) == []


class Refuse:
    """A verifier that vetoes every candidate."""

    name = "refuse"

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        self.calls += 1
        return Verdict(False, "refused", "refuse-stage")


def test_below_the_threshold_the_verifier_is_asked_later(
    db_path: Path, embedder: Any, gap: float
) -> None:
    verifier = Refuse()
    with open_cache(db_path, embedder, gap + 0.01, verifier=verifier) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        assert verifier.calls == 0  # not on the request's path
        (row,) = rows(c)
        assert verifier.calls == 1
    assert (row["stage"], row["agree"]) == ("refuse-stage", 1)  # a veto that cost a right hit


def test_above_the_threshold_a_veto_is_labelled_with_its_stage(
    db_path: Path, embedder: Any, gap: float
) -> None:
    verifier = Refuse()
    with open_cache(db_path, embedder, gap - 0.01, verifier=verifier) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        (row,) = rows(c)
        assert verifier.calls == 1  # judged once, during the lookup
    assert row["stage"] == "refuse-stage" and row["similarity"] > row["threshold"]


def test_a_hit_takes_no_label(db_path: Path, embedder: Any, gap: float) -> None:
    with open_cache(db_path, embedder, gap - 0.01) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        assert c.lookup(user(NEAR), Answer) is not None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        assert rows(c) == []


def test_retention_bounds_the_table(db_path: Path, embedder: Any, gap: float) -> None:
    with open_cache(db_path, embedder, gap + 0.01, audit_max_rows=2) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        # Retention must not run during the loop (under load the loop can outlast its period and
        # trim the table early): it is held off, then run once with every step due.
        timers = c.pipeline.upkeep._timers
        timers._last["audit"] = float("inf")
        for n in range(4):
            assert c.lookup(user(NEAR), Answer) is None
            c.store(user(NEAR), Answer, Answer(text=f"answer {n}"))
            c.db.delete(c.lookup(user(NEAR), Answer).entry_id)  # so the next lookup misses again
        assert len(rows(c)) == 4
        timers._last.clear()
        c.pipeline._maintain()
        kept = rows(c)
    assert [json.loads(r["answer_json"])["text"] for r in kept] == ["answer 2", "answer 3"]


def test_an_old_file_gains_the_tables(db_path: Path, embedder: Any, gap: float) -> None:
    with open_cache(db_path, embedder, gap + 0.01) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
    conn = sqlite3.connect(db_path)  # as a file written before near-miss labels existed
    conn.executescript("DROP TABLE near_misses; DROP TABLE threshold_changes;")
    conn.close()
    with open_cache(db_path, embedder, gap + 0.01) as c:
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        assert len(rows(c)) == 1
        c.set_threshold(0.9)
        assert c.stats().threshold_changes[0].new == 0.9


def test_band_is_checked(db_path: Path, embedder: Any) -> None:
    with pytest.raises(UsageError):
        SemanticCache(db_path, embedder=embedder, near_miss_band=-0.1)
    with pytest.raises(UsageError):
        SemanticCache(db_path, embedder=embedder, target_precision=1.5)


async def test_async_client_labels(db_path: Path, embedder: Any, gap: float) -> None:
    provider = FakeProvider()  # echoes the question: the near miss disagrees
    with open_cache(db_path, embedder, gap + 0.02) as c:
        client = c.wrap(instructor.from_openai(async_openai_client(provider)))
        await client.create(model="m", response_model=Answer, messages=user(STORED))
        await client.create(model="m", response_model=Answer, messages=user(NEAR))
        assert provider.count == 2
        (row,) = rows(c)
    assert (row["query"], row["agree"], json.loads(row["differing_fields"])) == (NEAR, 0, ["text"])


def test_retention_applies_to_log_tables_only(db_path: Path, embedder: Any) -> None:
    with open_cache(db_path, embedder, 0.9) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        with pytest.raises(UsageError):
            c.db.trim_log("entries", older_than=None, max_rows=0)
        assert len(c) == 1


class Urgency(BaseModel):
    priority: Literal["low", "medium", "urgent"]


@pytest.mark.parametrize("schema_evidence", [True, False])
def test_below_the_threshold_the_response_model_is_evidence_too(
    db_path: Path, embedder: Any, schema_evidence: bool
) -> None:
    stored, near = "My lamp arrived broken.", "My lamp arrived broken, it's urgent."
    gap_here = similarity(embedder, stored, near)
    with open_cache(db_path, embedder, gap_here + 0.01, schema_evidence=schema_evidence) as c:
        c.store(user(stored), Urgency, Urgency(priority="medium"))
        assert c.lookup(user(near), Urgency) is None
        c.store(user(near), Urgency, Urgency(priority="urgent"))
        (row,) = rows(c)
    assert row["agree"] == 0
    assert row["stage"] == ("schema" if schema_evidence else "")  # as a hit would be judged


# -- answer agreement: the rival a label keeps ------------------------------------------------

RIVAL = "I forgot my password, what do I do?"
OTHER_DAY = "I forgot my password on 12 May, how can I reset it?"


def test_a_near_miss_keeps_the_rival_answer_agreement_would_weigh(
    db_path: Path, embedder: Any, gap: float
) -> None:
    """At a threshold low enough to serve the candidate, a slightly less similar one holding
    another answer is eligible too and the cache serves neither: the label says so."""
    rival = similarity(embedder, NEAR, RIVAL)
    assert gap - 0.05 < rival < gap  # within the agreement margin, below the candidate
    with open_cache(db_path, embedder, gap + 0.01) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        c.store(user(RIVAL), Answer, Answer(text="other"))
        # What a lookup would do at a lower threshold: refused down to the rival, served above.
        assert c.lookup(user(NEAR), Answer, threshold=rival - 1e-4) is None
        hit = c.lookup(user(NEAR), Answer, threshold=rival + 1e-4)
        assert hit is not None and hit.matched_prompt == STORED
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        (row,) = rows(c)
        (label,) = c.db.labels()
    assert (row["candidate"], row["agree"], row["stage"]) == (STORED, 1, "")
    assert row["rival"] == pytest.approx(rival, abs=1e-5) and label.rival == row["rival"]
    assert not label.served_at(rival - 1e-4) and label.served_at(rival + 1e-4)


@pytest.mark.parametrize("case", ["same answer", "agreement off", "another instance"])
def test_no_rival_when_agreement_would_not_refuse(
    db_path: Path, embedder: Any, gap: float, case: str
) -> None:
    """A less similar candidate with the same answer, a cache without answer agreement, and a
    candidate vetoed as another instance of the request (another date) leave no rival."""
    options: dict[str, Any] = {}
    other, answer = RIVAL, "other"
    if case == "same answer":
        answer = "reset"
    elif case == "agreement off":
        options["agreement_margin"] = None
    else:
        other, options["verifier"] = OTHER_DAY, RuleVerifier()
        assert gap - 0.05 < similarity(embedder, NEAR, OTHER_DAY) < gap
    with open_cache(db_path, embedder, gap + 0.01, **options) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        c.store(user(other), Answer, Answer(text=answer))
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        (row,) = rows(c)
    assert (row["candidate"], row["stage"], row["rival"]) == (STORED, "", None)


def test_an_old_near_miss_table_gains_the_rival_column(
    db_path: Path, embedder: Any, gap: float
) -> None:
    with open_cache(db_path, embedder, gap + 0.01) as c:
        c.store(user(STORED), Answer, Answer(text="reset"))
        c.store(user(RIVAL), Answer, Answer(text="other"))
    conn = sqlite3.connect(db_path)  # as a file written before labels kept their rival
    conn.execute("ALTER TABLE near_misses DROP COLUMN rival")
    conn.close()
    with open_cache(db_path, embedder, gap + 0.01) as c:
        assert c.lookup(user(NEAR), Answer) is None
        c.store(user(NEAR), Answer, Answer(text="reset"))
        (row,) = rows(c)
    assert row["rival"] is not None
