"""The wrapped instructor client end to end: real openai + instructor, HTTP faked, real cache."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import instructor
import pytest
from pydantic import BaseModel

from semcache import SemanticCache, cache_hit

from .conftest import FakeProvider, async_openai_client, openai_client


class AsyncAsSync:
    """The async wrapper driven through the sync tests: the same calls, awaited on a private
    loop, so both wrappers are tested on the same matrix."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.loop = asyncio.new_event_loop()

    def _run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    @property
    def cache(self) -> SemanticCache:
        return self.wrapped.cache  # type: ignore[no-any-return]

    @property
    def chat(self) -> AsyncAsSync:
        return self

    @property
    def completions(self) -> AsyncAsSync:
        return self

    @property
    def messages(self) -> AsyncAsSync:
        return self

    def create(self, **kwargs: Any) -> Any:
        return self._run(self.wrapped.create(**kwargs))

    def create_with_completion(self, **kwargs: Any) -> Any:
        return self._run(self.wrapped.create_with_completion(**kwargs))


@pytest.fixture(params=["sync", "async"])
def client(
    request: pytest.FixtureRequest, cache: SemanticCache, provider: FakeProvider
) -> Iterator[Any]:
    if request.param == "sync":
        yield cache.wrap(instructor.from_openai(openai_client(provider)))
        return
    wrapped = AsyncAsSync(cache.wrap(instructor.from_openai(async_openai_client(provider))))
    assert type(wrapped.wrapped).__name__ == "AsyncCachedInstructor"
    yield wrapped
    wrapped.loop.close()


class Answer(BaseModel):
    text: str


class OtherAnswer(BaseModel):
    text: str
    note: str | None = None


def ask(client: Any, text: str, *, system: str = "You answer support questions.", **kw: Any) -> Any:
    kw.setdefault("model", "gpt-4o-mini")
    kw.setdefault("response_model", Answer)
    return client.create(
        messages=[{"role": "system", "content": system}, {"role": "user", "content": text}], **kw
    )


def test_exact_hit_skips_the_provider(client: Any, provider: FakeProvider) -> None:
    first = ask(client, "How do I reset my password?")
    second = ask(client, "How do I reset my password?")
    assert provider.count == 1
    assert second.model_dump() == first.model_dump() and isinstance(second, Answer)
    hit = cache_hit(second)
    assert hit is not None and hit.tier == "exact" and hit.similarity == 1.0
    assert cache_hit(first) is None


def test_paraphrase_is_a_semantic_hit(client: Any, provider: FakeProvider) -> None:
    ask(client, "How do I reset my password?")
    answer = ask(client, "How can I reset my password?")
    assert provider.count == 1
    hit = cache_hit(answer)
    assert hit is not None and hit.tier == "semantic"
    assert hit.matched_prompt == "How do I reset my password?"
    assert 0.85 <= hit.similarity < 1.0
    assert answer.text == "How do I reset my password?"  # the stored answer, rehydrated


def test_unrelated_request_misses(client: Any, provider: FakeProvider) -> None:
    ask(client, "How do I reset my password?")
    answer = ask(client, "What are your opening hours on Sunday?")
    assert provider.count == 2
    assert cache_hit(answer) is None
    assert answer.text == "What are your opening hours on Sunday?"


def test_threshold_boundary_is_inclusive(client: Any, provider: FakeProvider) -> None:
    ask(client, "How do I reset my password?")
    probe = ask(client, "password reset how?", semcache_threshold=-1.0, semcache_write=False)
    similarity = cache_hit(probe).similarity
    at = ask(client, "password reset how?", semcache_threshold=similarity, semcache_write=False)
    assert cache_hit(at) is not None
    above = math.nextafter(similarity, 2.0)
    calls = provider.count
    missed = ask(client, "password reset how?", semcache_threshold=above, semcache_write=False)
    assert cache_hit(missed) is None and provider.count == calls + 1


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"response_model": OtherAnswer},
        {"system": "You answer billing questions only."},
        {"temperature": 0.7},
        {"seed": 7},
        {"max_tokens": 50},
    ],
    ids=["model", "schema", "system-prompt", "temperature", "seed", "max-tokens"],
)
def test_scope_never_crossed(client: Any, provider: FakeProvider, change: dict[str, Any]) -> None:
    ask(client, "How do I reset my password?")
    answer = ask(client, "How do I reset my password?", **change)
    assert provider.count == 2
    assert cache_hit(answer) is None


def test_namespaces_never_share(db_path: Any, embedder: Any, provider: FakeProvider) -> None:
    with (
        SemanticCache(db_path, namespace="tenant-a", embedder=embedder) as a,
        SemanticCache(db_path, namespace="tenant-b", embedder=embedder) as b,
    ):
        ca = a.wrap(instructor.from_openai(openai_client(provider)))
        cb = b.wrap(instructor.from_openai(openai_client(provider)))
        ask(ca, "How do I reset my password?")
        assert cache_hit(ask(cb, "How do I reset my password?")) is None
        assert cache_hit(ask(cb, "How can I reset my password?")) is not None  # b's own entry
        assert provider.count == 2


def test_create_with_completion_restores_usage(client: Any, provider: FakeProvider) -> None:
    messages = [{"role": "user", "content": "Where is my parcel?"}]
    live, live_completion = client.create_with_completion(
        model="gpt-4o-mini", response_model=Answer, messages=messages
    )
    cached, completion = client.create_with_completion(
        model="gpt-4o-mini", response_model=Answer, messages=messages
    )
    assert provider.count == 1
    assert cached.model_dump() == live.model_dump()
    assert completion.usage.total_tokens == live_completion.usage.total_tokens
    assert completion.choices[0].message.tool_calls[0].function.name == "Answer"
    assert cached._raw_response is completion


def test_chat_completions_create_goes_through_the_cache(
    client: Any, provider: FakeProvider
) -> None:
    messages = [{"role": "user", "content": "Where is my parcel?"}]
    client.chat.completions.create(model="m", response_model=Answer, messages=messages)
    again = client.chat.completions.create(model="m", response_model=Answer, messages=messages)
    assert provider.count == 1 and cache_hit(again) is not None


def test_bypass_read_and_write(client: Any, provider: FakeProvider) -> None:
    ask(client, "Where is my parcel?", semcache_write=False)
    assert len(client.cache) == 0
    ask(client, "Where is my parcel?")
    forced = ask(client, "Where is my parcel?", semcache_read=False)
    assert cache_hit(forced) is None and provider.count == 3


def test_unserializable_request_passes_through(client: Any, provider: FakeProvider) -> None:
    marker = object()
    for _ in range(2):
        answer = ask(client, "Where is my parcel?", context={"handle": marker})
        assert cache_hit(answer) is None
    assert provider.count == 2 and len(client.cache) == 0


def test_non_model_response_passes_through(client: Any, provider: FakeProvider) -> None:
    messages = [{"role": "user", "content": "Where is my parcel?"}]
    for _ in range(2):
        client.create(model="m", response_model=None, messages=messages)
    assert provider.count == 2


def test_stale_entry_is_a_miss_and_gets_replaced(client: Any, provider: FakeProvider) -> None:
    from pydantic import field_validator

    class Strict(BaseModel):
        text: str

        @field_validator("text")
        @classmethod
        def short(cls, value: str) -> str:
            if len(value) > 10:
                raise ValueError("too long")
            return value

    class Answer(BaseModel):  # same schema as Strict, but accepts anything
        text: str

    Answer.__name__ = Strict.__name__ = "Answer"
    cache = client.cache
    first = ask(client, "Where is my parcel?", response_model=Answer)
    old_id = cache.lookup(
        [{"role": "system", "content": "You answer support questions."},
         {"role": "user", "content": "Where is my parcel?"}],
        Answer, model="gpt-4o-mini",
    ).entry_id  # fmt: skip
    provider.answer = lambda body: {"text": "short"}
    fresh = ask(client, "Where is my parcel?", response_model=Strict)
    assert first.text == "Where is my parcel?" and fresh.text == "short"
    assert cache_hit(fresh) is None and provider.count == 2
    again = ask(client, "Where is my parcel?", response_model=Strict)
    hit = cache_hit(again)
    assert hit is not None and hit.tier == "exact" and hit.entry_id != old_id
    assert len(cache) == 1


async def test_async_client_hits(aclient: Any, provider: FakeProvider) -> None:
    messages = [{"role": "user", "content": "How do I reset my password?"}]
    first = await aclient.create(model="m", response_model=Answer, messages=messages)
    second, completion = await aclient.create_with_completion(
        model="m", response_model=Answer, messages=messages
    )
    paraphrase = await aclient.create(
        model="m", response_model=Answer,
        messages=[{"role": "user", "content": "How can I reset my password?"}],
    )  # fmt: skip
    assert provider.count == 1
    assert second.model_dump() == first.model_dump() and completion.usage.total_tokens > 0
    assert cache_hit(paraphrase).tier == "semantic"


def test_stats_count_hits_and_tokens(client: Any, provider: FakeProvider) -> None:
    _, completion = client.create_with_completion(
        model="gpt-4o-mini", response_model=Answer,
        messages=[{"role": "user", "content": "How do I reset my password?"}],
    )  # fmt: skip
    for text in ["How do I reset my password?", "How can I reset my password?"]:
        client.create(model="gpt-4o-mini", response_model=Answer,
                      messages=[{"role": "user", "content": text}])  # fmt: skip
    stats = client.cache.stats()
    assert (stats.entries, stats.exact_hits, stats.semantic_hits, stats.misses) == (1, 1, 1, 1)
    assert stats.calls_avoided == 2
    assert stats.tokens_avoided == 2 * completion.usage.total_tokens


def test_async_client_wrapped_from_async_openai(
    cache: SemanticCache, provider: FakeProvider
) -> None:
    wrapped = cache.wrap(instructor.from_openai(async_openai_client(provider)))
    assert type(wrapped).__name__ == "AsyncCachedInstructor"


def test_key_is_taken_before_retries_mutate_the_request(
    client: Any, provider: FakeProvider
) -> None:
    class Strict(BaseModel):
        text: str
        count: int

    answers = iter([{"text": "first try, missing count"}, {"text": "ok", "count": 2}])
    provider.answer = lambda body: next(answers)
    messages = [{"role": "user", "content": "Count the items"}]
    value = client.create(model="m", response_model=Strict, messages=messages, max_retries=2)
    assert value.count == 2 and provider.count == 2
    assert len(provider.calls[1]["messages"]) > 1  # instructor's reask added turns on its copy
    assert messages == [{"role": "user", "content": "Count the items"}]
    again = client.messages.create(model="m", response_model=Strict, messages=messages)
    hit = cache_hit(again)
    assert hit is not None and hit.tier == "exact" and provider.count == 2


def test_from_provider_clients_key_on_their_default_model(
    cache: SemanticCache, provider: FakeProvider
) -> None:
    import httpx

    def client_for(model: str) -> Any:
        http = httpx.Client(transport=httpx.MockTransport(provider.handler))
        return cache.wrap(
            instructor.from_provider(
                model, api_key="sk-test", base_url="http://fake/v1", http_client=http
            )
        )

    mini, big = client_for("openai/gpt-4o-mini"), client_for("openai/gpt-4o")
    messages = [{"role": "user", "content": "Where is my parcel?"}]
    ask_mini = mini.create(response_model=Answer, messages=messages)
    assert cache_hit(mini.create(response_model=Answer, messages=messages)).tier == "exact"
    from_big = big.create(response_model=Answer, messages=messages)
    assert cache_hit(ask_mini) is None and cache_hit(from_big) is None
    assert [c["model"] for c in provider.calls] == ["gpt-4o-mini", "gpt-4o"]
