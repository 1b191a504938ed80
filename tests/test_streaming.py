"""Streaming calls through the cache (issue #13), end to end.

Real ``openai`` and ``instructor`` clients, sync and async, talk to a fake provider that streams
server-sent events as OpenAI does: tool-call argument deltas (TOOLS), content deltas (JSON) or a
fenced block in content deltas (MD_JSON). It can drop the connection or time out mid-stream, and
cut its answer short while still ending the stream cleanly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import httpx
import instructor
import pytest
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel, field_validator

from semcache import SemanticCache, UsageError, cache_hit
from semcache.events import HitEvent, StoreEvent

from .conftest import readme_block

SYSTEM = "You answer support questions."
MODES = {
    "tools": instructor.Mode.TOOLS,
    "json": instructor.Mode.JSON,
    "md_json": instructor.Mode.MD_JSON,
}


class Answer(BaseModel):
    text: str
    words: int
    tags: list[str]


class Strict(BaseModel):
    text: str

    @field_validator("text")
    @classmethod
    def no_parcels(cls, value: str) -> str:
        if "parcel" in value:
            raise ValueError("parcels are not discussed here")
        return value


def asked(body: dict[str, Any]) -> str:
    """The first user message: JSON and MD_JSON modes add instructions of their own after it."""
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def answer_for(body: dict[str, Any]) -> dict[str, Any]:
    text = asked(body)
    return {"text": text, "words": len(text.split()), "tags": ["support", text.split()[0].lower()]}


def items_for(body: dict[str, Any]) -> dict[str, Any]:
    return {"tasks": [{**answer_for(body), "words": n, "tags": [str(n)]} for n in range(1, 4)]}


class Events(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body of server-sent events; ``error`` is raised after the last one."""

    def __init__(self, events: list[bytes], error: Exception | None) -> None:
        self.events, self.error = events, error
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for event in self.events:
            self.sent += 1
            yield event
        if self.error is not None:
            raise self.error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self.events:
            self.sent += 1
            yield event
        if self.error is not None:
            raise self.error


class StreamingProvider:
    """An OpenAI chat-completions endpoint that streams its answer, 8 characters per chunk.

    ``error``: raised after the first three argument chunks (a dropped connection, a timeout).
    ``cut_at``: the answer's JSON stops after this many characters and the stream still ends
    normally, with ``finish_reason="length"``, as OpenAI ends a stream out of tokens.
    """

    def __init__(self, mode: str, answer: Callable[[dict[str, Any]], Any] = answer_for) -> None:
        self.mode, self.answer = mode, answer
        self.error: Exception | None = None
        self.cut_at: int | None = None
        self.calls: list[dict[str, Any]] = []
        self.bodies: list[Events] = []  # each streamed response, to see how much of it was read

    @property
    def count(self) -> int:
        return len(self.calls)

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        text = json.dumps(self.answer(body))
        if self.mode == "md_json":
            text = f"Here it is:\n```json\n{text}\n```"
        tool = body["tools"][0]["function"]["name"] if body.get("tools") else None
        if not body.get("stream"):
            return httpx.Response(200, json=self._completion(body, tool, text))
        finish = "stop"
        if self.cut_at is not None:
            text, finish = text[: self.cut_at], "length"
        pieces = [text[i : i + 8] for i in range(0, len(text), 8)]
        if tool is not None:
            head = {"index": 0, "id": "call_1", "type": "function"}
            first = {"role": "assistant", "tool_calls": [{**head, "function": {"name": tool}}]}
            deltas = [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
        else:
            first = {"role": "assistant", "content": ""}
            deltas = [{"content": p} for p in pieces]
        events = [self._event(body, first)] + [self._event(body, d) for d in deltas]
        if self.error is not None:
            events = events[:4]
        else:
            events += [self._event(body, {}, finish), b"data: [DONE]\n\n"]
        self.bodies.append(Events(events, self.error))
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, stream=self.bodies[-1], headers=headers)

    @staticmethod
    def _completion(body: dict[str, Any], tool: str | None, text: str) -> dict[str, Any]:
        """A whole (not streamed) completion, for ``create``."""
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if tool is not None:
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": tool, "arguments": text},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
            "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
        }  # fmt: skip

    @staticmethod
    def _event(body: dict[str, Any], delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": body["model"], "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }  # fmt: skip
        return f"data: {json.dumps(payload)}\n\n".encode()


class Driver:
    """A wrapped client, sync or async, driven through the same calls: async ones run on a
    private loop, and every stream is collected into a list."""

    def __init__(self, wrapped: Any, is_async: bool) -> None:
        self.wrapped, self.is_async = wrapped, is_async
        self.loop = asyncio.new_event_loop() if is_async else None

    @property
    def cache(self) -> SemanticCache:
        return self.wrapped.cache  # type: ignore[no-any-return]

    def _run(self, awaitable: Any) -> Any:
        assert self.loop is not None
        return self.loop.run_until_complete(awaitable)

    def _collect(self, stream: Any) -> list[Any]:
        if not self.is_async:
            return list(stream)

        async def collect() -> list[Any]:
            source = await stream if asyncio.iscoroutine(stream) else stream
            return [item async for item in source]

        return self._run(collect())  # type: ignore[no-any-return]

    def partial(self, text: str, **kw: Any) -> list[Any]:
        kw.setdefault("response_model", Answer)
        return self._collect(self.wrapped.create_partial(**_call(text, kw)))

    def iterable(self, text: str, **kw: Any) -> list[Any]:
        kw.setdefault("response_model", Answer)
        return self._collect(self.wrapped.create_iterable(**_call(text, kw)))

    def stream_create(self, text: str, response_model: Any, **kw: Any) -> list[Any]:
        call = _call(text, {"response_model": response_model, "stream": True, **kw})
        return self._collect(self.wrapped.create(**call))

    def create(self, text: str, **kw: Any) -> Any:
        kw.setdefault("response_model", Answer)
        result = self.wrapped.create(**_call(text, kw))
        return self._run(result) if self.is_async else result

    def create_with_completion(self, text: str, **kw: Any) -> Any:
        kw.setdefault("response_model", Answer)
        result = self.wrapped.create_with_completion(**_call(text, kw))
        return self._run(result) if self.is_async else result

    def abandon(self, method: str, text: str, **kw: Any) -> Any:
        """Take the first object of a stream and break out of the loop."""
        kw.setdefault("response_model", Answer)
        stream = getattr(self.wrapped, method)(**_call(text, kw))
        if not self.is_async:
            first = None
            for first in stream:  # noqa: B007 (the loop is left at once)
                break
            del stream  # the generator is closed when the caller lets go of it
            return first

        async def take() -> Any:
            first = None
            async for first in stream:  # noqa: B007
                break
            await stream.aclose()
            return first

        return self._run(take())

    def close(self) -> None:
        if self.loop is not None:
            self.loop.close()


def _call(text: str, kw: dict[str, Any]) -> dict[str, Any]:
    kw.setdefault("model", "gpt-4o-mini")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return {"messages": messages, **kw}


def make_driver(cache: SemanticCache, provider: StreamingProvider, is_async: bool) -> Driver:
    transport = httpx.MockTransport(provider.handler)
    mode = MODES[provider.mode]
    if is_async:
        http = httpx.AsyncClient(transport=transport)
        client: Any = AsyncOpenAI(api_key="sk-test", base_url="http://fake/v1", http_client=http)
    else:
        client = OpenAI(
            api_key="sk-test",
            base_url="http://fake/v1",
            http_client=httpx.Client(transport=transport),
        )
    return Driver(cache.wrap(instructor.from_openai(client, mode=mode)), is_async)


@pytest.fixture(params=[f"{c}-{m}" for c, m in itertools.product(["sync", "async"], MODES)])
def every(request: pytest.FixtureRequest, cache: SemanticCache) -> Iterator[tuple[Driver, Any]]:
    """Each client (sync, async) in each mode (TOOLS, JSON, MD_JSON), with its provider."""
    kind, mode = request.param.split("-", 1)
    provider = StreamingProvider(mode)
    driver = make_driver(cache, provider, kind == "async")
    yield driver, provider
    driver.close()


@pytest.fixture(params=["sync", "async"])
def both(request: pytest.FixtureRequest, cache: SemanticCache) -> Iterator[tuple[Driver, Any]]:
    """The sync and the async client in TOOLS mode."""
    provider = StreamingProvider("tools")
    driver = make_driver(cache, provider, request.param == "async")
    yield driver, provider
    driver.close()


def filled(obj: BaseModel) -> int:
    return sum(value not in (None, "", []) for value in obj.model_dump().values())


def test_exact_and_semantic_hits_replay_a_stream(every: tuple[Driver, Any]) -> None:
    client, provider = every
    live = client.partial("How do I reset my password?")
    assert provider.count == 1 and len(client.cache) == 1
    exact = client.partial("How do I reset my password?")
    semantic = client.partial("How can I reset my password?")
    assert provider.count == 1
    for replayed, tier in [(exact, "exact"), (semantic, "semantic")]:
        assert len(replayed) >= 3, "several partial objects, not just the answer"
        assert all(isinstance(part, Answer) for part in replayed)
        counts = [filled(part) for part in replayed]
        assert counts == sorted(counts) and counts[0] < counts[-1], "fields fill in"
        assert replayed[-1].model_dump() == live[-1].model_dump()
        assert all(cache_hit(part).tier == tier for part in replayed)  # type: ignore[union-attr]
    assert cache_hit(live[-1]) is None


def test_iterables_replay_item_by_item(every: tuple[Driver, Any]) -> None:
    client, provider = every
    provider.answer = items_for
    live = client.iterable("List my open tickets")
    assert [item.words for item in live] == [1, 2, 3] and provider.count == 1
    exact = client.iterable("List my open tickets")
    semantic = client.iterable("List all my open tickets")
    assert provider.count == 1
    for replayed, tier in [(exact, "exact"), (semantic, "semantic")]:
        assert [i.model_dump() for i in replayed] == [i.model_dump() for i in live]
        hit = cache_hit(replayed[0])
        assert hit is not None and hit.tier == tier


def test_a_cached_stream_is_lazy_and_yields_as_items_complete(both: tuple[Driver, Any]) -> None:
    client, provider = both
    provider.answer = items_for
    live = client.iterable("List my open tickets")
    if client.is_async:
        return  # async streams are lazy by construction (an async generator); sync is checked
    stream = client.wrapped.create_iterable(
        **_call("List my open tickets", {"response_model": Answer})
    )
    assert isinstance(stream, Iterator)
    first = next(stream)
    assert first.model_dump() == live[0].model_dump()
    assert [i.words for i in stream] == [2, 3]


def test_a_live_stream_reaches_the_caller_as_it_arrives(both: tuple[Driver, Any]) -> None:
    """On a miss the caller gets each object when instructor yields it, not when the stream ends
    (instructor's sync create_partial reads the whole stream first; its iterables do not)."""
    client, provider = both
    method = "create_partial" if client.is_async else "create_iterable"
    provider.answer = answer_for if client.is_async else items_for
    call = _call("List my open tickets", {"response_model": Answer})
    stream = getattr(client.wrapped, method)(**call)
    if client.is_async:

        async def first() -> Any:
            return await stream.__anext__()

        client._run(first())
    else:
        next(stream)
    body = provider.bodies[-1]
    assert 0 < body.sent < len(body.events), "the first object came before the stream ended"
    client._collect(stream)
    assert body.sent == len(body.events) and len(client.cache) == 1


def test_create_answers_stream_back_to_create_partial(both: tuple[Driver, Any]) -> None:
    client, provider = both
    value = client.create("Where is my parcel?")
    parts = client.partial("Where is my parcel?")
    from_stream = client.stream_create("Where is my parcel?", instructor.Partial[Answer])
    assert provider.count == 1
    assert parts[-1].model_dump() == value.model_dump() == from_stream[-1].model_dump()
    assert len(parts) >= 3 and cache_hit(parts[-1]).tier == "exact"  # type: ignore[union-attr]


def test_a_streamed_miss_serves_create_and_create_with_completion(
    both: tuple[Driver, Any],
) -> None:
    client, provider = both
    live = client.partial("Where is my parcel?")
    value = client.create("Where is my parcel?")
    again, completion = client.create_with_completion("Where's my parcel?")
    from_stream = client.stream_create("Where is my parcel?", instructor.Partial[Answer])
    assert provider.count == 1
    assert value.model_dump() == again.model_dump() == live[-1].model_dump()
    assert from_stream[-1].model_dump() == live[-1].model_dump()
    assert cache_hit(value).tier == "exact" and cache_hit(again).tier == "semantic"  # type: ignore[union-attr]
    assert completion is None  # a stream's raw completion is not kept


def test_a_plain_model_with_stream_true_passes_through(both: tuple[Driver, Any]) -> None:
    """instructor cannot stream a plain model; a hit must not succeed where the call fails."""
    client, provider = both
    client.create("Where is my parcel?")
    for _ in range(2):
        before = provider.count
        with pytest.raises(Exception):  # noqa: B017 (whatever instructor raises, unchanged)
            client.create("Where is my parcel?", stream=True, max_retries=1)
        assert provider.count > before, "the stored answer was not served"


def test_iterable_entries_are_their_own(both: tuple[Driver, Any]) -> None:
    """A list answer and a one-object answer are different answers: neither serves the other."""
    client, provider = both
    provider.answer = items_for
    items = client.iterable("List my open tickets")
    from_create = client.stream_create("List my open tickets", Iterable[Answer])
    assert provider.count == 1 and len(from_create) == len(items) == 3
    provider.answer = answer_for
    value = client.create("List my open tickets")
    assert provider.count == 2 and cache_hit(value) is None and len(client.cache) == 2
    assert client.iterable("List my open tickets")[0].model_dump() == items[0].model_dump()


@pytest.mark.parametrize("method", ["create_partial", "create_iterable"])
def test_an_abandoned_stream_stores_nothing(both: tuple[Driver, Any], method: str) -> None:
    client, provider = both
    if method == "create_iterable":
        provider.answer = items_for
    client.abandon(method, "Where is my parcel?")
    assert len(client.cache) == 0 and provider.count == 1
    client.abandon(method, "Where is my parcel?")
    assert provider.count == 2, "nothing was stored, so the provider is asked again"
    complete = getattr(client, "partial" if method == "create_partial" else "iterable")
    live = complete("Where is my parcel?")
    assert len(client.cache) == 1
    assert complete("Where is my parcel?")[-1].model_dump() == live[-1].model_dump()
    assert provider.count == 3


@pytest.mark.parametrize("error", [httpx.ReadError("lost"), httpx.ReadTimeout("slow")])
@pytest.mark.parametrize("method", ["partial", "iterable"])
def test_a_failure_mid_stream_stores_nothing(
    both: tuple[Driver, Any], method: str, error: Exception
) -> None:
    client, provider = both
    if method == "iterable":
        provider.answer = items_for
    provider.error = error
    with pytest.raises(Exception) as raised:
        getattr(client, method)("Where is my parcel?", max_retries=1)
    assert type(error).__name__ in repr(raised.value) + repr(raised.value.__cause__)
    assert len(client.cache) == 0
    provider.error = None
    live = getattr(client, method)("Where is my parcel?")
    assert len(client.cache) == 1 and provider.count == 2
    assert getattr(client, method)("Where is my parcel?")[-1].model_dump() == live[-1].model_dump()


@pytest.mark.parametrize("method", ["partial", "iterable"])
def test_a_validation_failure_stores_nothing(both: tuple[Driver, Any], method: str) -> None:
    client, provider = both
    if method == "iterable":
        provider.answer = lambda body: {"tasks": [{"text": asked(body)}]}
    else:
        provider.answer = lambda body: {"text": asked(body)}
    with pytest.raises(Exception, match="parcels are not discussed"):
        getattr(client, method)("Where is my parcel?", response_model=Strict, max_retries=1)
    assert len(client.cache) == 0
    answer = getattr(client, method)("Where is my order?", response_model=Strict)
    assert len(client.cache) == 1 and answer[-1].text == "Where is my order?"


def test_a_stream_cut_short_is_not_stored(both: tuple[Driver, Any]) -> None:
    """The stream ends cleanly (finish_reason "length") before a required field arrives: the
    caller gets the partial objects as instructor builds them, and nothing is stored."""
    client, provider = both
    provider.cut_at = 30
    parts = client.partial("Where is my parcel?")
    assert parts and parts[-1].words is None
    assert len(client.cache) == 0
    provider.cut_at = None
    client.partial("Where is my parcel?")
    assert len(client.cache) == 1 and provider.count == 2


def test_read_and_write_switches_apply_to_streams(both: tuple[Driver, Any]) -> None:
    client, provider = both
    client.partial("Where is my parcel?", semcache_write=False)
    assert len(client.cache) == 0
    client.partial("Where is my parcel?")
    forced = client.partial("Where is my parcel?", semcache_read=False)
    assert cache_hit(forced[-1]) is None and provider.count == 3


def test_replay_delay_paces_the_objects(both: tuple[Driver, Any]) -> None:
    client, _ = both
    client.partial("Where is my parcel?")
    fast = client.partial("Where is my parcel?")
    start = time.perf_counter()
    paced = client.partial("Where is my parcel?", semcache_replay_delay=0.02)
    slow = time.perf_counter() - start
    assert len(paced) == len(fast) >= 3 and paced[-1].model_dump() == fast[-1].model_dump()
    # A lower bound only (a sleep never ends early): how fast an unpaced replay is belongs to
    # benchmarks/streaming.py, not to a test on a shared machine.
    assert slow >= 0.02 * (len(paced) - 1)
    with pytest.raises(UsageError, match="semcache_replay_delay"):
        client.partial("Where is my parcel?", semcache_replay_delay=-1)


def test_streamed_hits_count_emit_and_are_audited(tmp_path: Any, embedder: Any) -> None:
    events: list[Any] = []
    with SemanticCache(tmp_path / "audited.db", threshold=0.85, embedder=embedder, audit=True) as c:
        c.events.on(events.append)
        streaming = StreamingProvider("tools")
        client = make_driver(c, streaming, is_async=False)
        live = client.partial("How do I reset my password?")
        exact = client.partial("How do I reset my password?")
        semantic = client.partial("How can I reset my password?")
        assert exact[-1].model_dump() == semantic[-1].model_dump() == live[-1].model_dump()
        stats = c.stats()
        assert (stats.exact_hits, stats.semantic_hits, stats.misses) == (1, 1, 1)
        assert stats.calls_avoided == 2
        assert [e.tier for e in events if isinstance(e, HitEvent)] == ["exact", "semantic"]
        assert len([e for e in events if isinstance(e, StoreEvent)]) == 1
        c.flush()
        rows = c.db.connection().execute("SELECT query, verdict FROM audit").fetchall()
        assert ("How can I reset my password?", "hit") in rows


def test_raw_streams_pass_through(both: tuple[Driver, Any]) -> None:
    """``stream=True`` without a response model is the provider's own stream, never cached."""
    client, provider = both
    for _ in range(2):
        chunks = client._collect(
            client.wrapped.create(
                **_call("Where is my parcel?", {"response_model": None, "stream": True})
            )
        )
        assert chunks and all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert provider.count == 2 and len(client.cache) == 0


def test_the_readme_example_runs(tmp_path: Any, monkeypatch: Any, capsys: Any) -> None:
    code = readme_block("Streaming calls")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-used")  # the answer is a hit: no request is made
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    scope["cache"].close()
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) >= 4 and printed[-1] == "exact"
    assert printed[0] == "name=None age=None" and printed[-2] == "name='Jason' age=25"
