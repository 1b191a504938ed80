"""Shadow verification: sampled semantic hits re-asked in the background, precision estimated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import instructor
import pytest
from pydantic import BaseModel

from semcache import SemanticCache, UsageError, cache_hit

from .conftest import FakeProvider, async_openai_client, openai_client


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


PARAPHRASES = [
    "How can I reset my password?",
    "how do i reset my password",
    "Please, how do I reset my password?",
]


def test_agreeing_hits_estimate_high_precision(db_path: Path, embedder: Any) -> None:
    provider = FakeProvider(answer=lambda body: {"text": "reset"})
    with SemanticCache(
        db_path, embedder=embedder, verifier=None, threshold=0.8, shadow_rate=1.0
    ) as c:
        client = c.wrap(instructor.from_openai(openai_client(provider)))
        client.create(
            model="m", response_model=Answer, messages=user("How do I reset my password?")
        )
        served = [
            client.create(model="m", response_model=Answer, messages=user(t)) for t in PARAPHRASES
        ]
        client.drain()
        assert all(cache_hit(s).tier == "semantic" for s in served)
        assert provider.count == 1 + len(PARAPHRASES)  # one live call, one shadow call per hit
        (estimate,) = c.stats().semantic_precision.values()
        assert (estimate.samples, estimate.agreements, estimate.precision) == (3, 3, 1.0)
        assert 0.0 < estimate.low < 1.0 and estimate.high == 1.0


def test_disagreeing_hits_tighten_the_scope(db_path: Path, embedder: Any) -> None:
    provider = FakeProvider()  # answers with the question's own text: every paraphrase differs
    with SemanticCache(
        db_path,
        embedder=embedder,
        verifier=None,
        threshold=0.8,
        shadow_rate=1.0,
        shadow_target=0.99,
    ) as c:
        client = c.wrap(instructor.from_openai(openai_client(provider)))
        client.create(
            model="m", response_model=Answer, messages=user("How do I reset my password?")
        )
        hit = cache_hit(
            client.create(model="m", response_model=Answer, messages=user(PARAPHRASES[0]))
        )
        client.drain()
        assert hit is not None
        raised = c.thresholds()[f"scope:{hit.scope}"]
        assert raised > hit.similarity
        again = client.create(model="m", response_model=Answer, messages=user(PARAPHRASES[0]))
        assert cache_hit(again) is None or cache_hit(again).tier == "exact"
        (estimate,) = c.stats().semantic_precision.values()
        assert (estimate.samples, estimate.agreements) == (1, 0)


def test_no_shadow_calls_by_default(client: Any, provider: FakeProvider) -> None:
    client.create(model="m", response_model=Answer, messages=user("How do I reset my password?"))
    client.create(model="m", response_model=Answer, messages=user(PARAPHRASES[0]))
    client.drain()
    assert provider.count == 1 and client.cache.stats().semantic_precision == {}


async def test_async_shadow(db_path: Path, embedder: Any) -> None:
    provider = FakeProvider(answer=lambda body: {"text": "reset"})
    with SemanticCache(
        db_path, embedder=embedder, verifier=None, threshold=0.8, shadow_rate=1.0
    ) as c:
        client = c.wrap(instructor.from_openai(async_openai_client(provider)))
        await client.create(
            model="m", response_model=Answer, messages=user("How do I reset my password?")
        )
        await client.create(model="m", response_model=Answer, messages=user(PARAPHRASES[0]))
        await client.adrain()
        assert provider.count == 2
        (estimate,) = c.stats().semantic_precision.values()
        assert estimate.agreements == 1


def test_shadow_settings_are_checked(db_path: Path, embedder: Any) -> None:
    with pytest.raises(UsageError):
        SemanticCache(db_path, embedder=embedder, shadow_rate=1.5)
