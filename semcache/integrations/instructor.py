"""Wrap an instructor client so that its structured calls go through a ``SemanticCache``.

The wrapper has the client's interface: ``create``, ``create_with_completion``,
``chat.completions.create`` and ``messages.create`` consult the cache, and so do the streaming
calls, ``create_partial``, ``create_iterable`` and ``create(stream=True)`` with ``Partial[M]`` or
``Iterable[M]`` (``semcache.integrations.streaming``: a hit is replayed as a stream, a live stream
is stored once it has ended). A raw ``stream=True`` call without a response model, and everything
else, is delegated untouched.

Per-call parameters, visible in the signatures below, control the cache: ``semcache_threshold``
(a cosine similarity for this call), ``semcache_read=False`` (do not serve from the cache),
``semcache_write=False`` (do not store the answer), ``semcache_ttl`` (lifetime of the stored
answer, in seconds) and, on streams, ``semcache_replay_delay`` (seconds between replayed objects).

With ``SemanticCache(shadow_rate=...)``, a sampled semantic hit is also re-asked of the provider in
the background (``semcache.integrations.shadow_calls``) and the two structured answers are
compared; the caller gets the cached answer at once either way.

The sync and async wrappers key calls with ``Calls`` (``semcache.integrations.calls``): they differ
only in how they call the provider and in running cache work in a thread (``asyncio.to_thread``)
so the event loop never waits on SQLite or the embedding model. Their methods are typed like
instructor's own: ``create(response_model=User)`` is a ``User`` to a type checker (an awaitable of
one on the async client), ``create_with_completion`` a ``tuple[User, Any]``, ``create_partial`` a
generator of ``User`` (an async generator on the async client). What instructor does not publish
as API is read in ``semcache.integrations.instructor_internals`` only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

from semcache.errors import UsageError
from semcache.integrations import instructor_internals as internals
from semcache.integrations import streaming
from semcache.integrations.calls import Calls
from semcache.integrations.shadow_calls import ShadowCalls
from semcache.pipeline import Front
from semcache.requests import Plan

if TYPE_CHECKING:
    from instructor import AsyncInstructor, Instructor

T = TypeVar("T")


@overload
def wrap_client(cache: Front, client: AsyncInstructor) -> AsyncCachedInstructor: ...  # type: ignore[overload-overlap]


@overload
def wrap_client(cache: Front, client: Instructor) -> CachedInstructor: ...


@overload
def wrap_client(cache: Front, client: object) -> CachedClient: ...


def wrap_client(cache: Front, client: Any) -> CachedClient:
    """Return a cached view of an instructor client (``Instructor`` or ``AsyncInstructor``)."""
    if not hasattr(client, "create_with_completion") or not hasattr(client, "create_fn"):
        raise UsageError(
            "wrap() takes an instructor client (instructor.from_openai(...), from_provider(...), "
            f"from_litellm(...)); got {type(client).__name__}"
        )
    if internals.is_async_client(client):
        return AsyncCachedInstructor(cache, client)
    return CachedInstructor(cache, client)


class _Wrapper:
    """What both wrappers hold: the client, the cache, and the calls that pass through untouched."""

    def __init__(self, cache: Front, client: Any) -> None:
        self._calls = Calls(cache, client)
        self._streams = streaming.Streams(self._calls)
        self.client = client
        self.cache = cache
        self.pipeline = cache.pipeline
        self._shadows = ShadowCalls(cache.pipeline, client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class CachedInstructor(_Wrapper):
    """A synchronous instructor client with a semantic cache in front of it."""

    @property
    def chat(self) -> CachedInstructor:
        return self

    @property
    def completions(self) -> CachedInstructor:
        return self

    @property
    def messages(self) -> CachedInstructor:
        return self

    def create(
        self,
        response_model: type[T],
        messages: Any,
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        semcache_ttl: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Like instructor's ``create``: the cached answer, or the provider's (then stored).
        With ``stream=True`` and ``Partial[M]`` or ``Iterable[M]``, a stream as ``create_partial``
        or ``create_iterable`` gives it."""

        def live() -> Any:
            return self.client.create(
                response_model=response_model, messages=messages, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            )  # fmt: skip

        shape = streaming.stream_shape(response_model) if kwargs.get("stream") else None
        if shape is not None:
            call = streaming.Call(
                messages, context, strict, kwargs, semcache_threshold, semcache_read,
                semcache_write, semcache_ttl, None,
            )  # fmt: skip
            return self._streams.stream(shape, call, live)  # type: ignore[no-any-return]
        plan = self._calls.plan(
            response_model, messages, context, strict, kwargs,
            semcache_threshold, semcache_read, semcache_write, semcache_ttl,
        )  # fmt: skip
        if plan is None:
            return live()  # type: ignore[no-any-return]
        return self._cached(plan, messages, max_retries, kwargs)[0]  # type: ignore[no-any-return]

    def create_with_completion(
        self,
        messages: Any,
        response_model: type[T],
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        semcache_ttl: float | None = None,
        **kwargs: Any,
    ) -> tuple[T, Any]:
        """Like instructor's ``create_with_completion``; on a hit the completion is the stored one,
        restored as nested ``SimpleNamespace``."""
        plan = self._calls.plan(
            response_model, messages, context, strict, kwargs,
            semcache_threshold, semcache_read, semcache_write, semcache_ttl,
        )  # fmt: skip
        if plan is None:
            return self.client.create_with_completion(  # type: ignore[no-any-return]
                messages=messages, response_model=response_model, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            )  # fmt: skip
        return self._cached(plan, messages, max_retries, kwargs)

    def create_partial(
        self,
        response_model: type[T],
        messages: Any,
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        semcache_ttl: float | None = None,
        semcache_replay_delay: float | None = None,
        **kwargs: Any,
    ) -> Generator[T, None, None]:
        """Like instructor's ``create_partial``: partial objects replayed from the cache
        (``semcache_replay_delay`` seconds apart), or the provider's stream, whose answer is stored
        once the stream has ended and validates. See ``semcache.integrations.streaming``."""
        call = streaming.Call(
            messages, context, strict, kwargs, semcache_threshold, semcache_read, semcache_write,
            semcache_ttl, semcache_replay_delay,
        )  # fmt: skip
        return self._streams.stream(  # type: ignore[no-any-return]
            streaming.shape("partial", response_model), call,
            lambda: self.client.create_partial(
                response_model=response_model, messages=messages, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            ),
        )  # fmt: skip

    def create_iterable(
        self,
        messages: Any,
        response_model: type[T],
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        semcache_ttl: float | None = None,
        semcache_replay_delay: float | None = None,
        **kwargs: Any,
    ) -> Generator[T, None, None]:
        """Like instructor's ``create_iterable``: each item of a cached list as its object
        closes, or the provider's stream, stored once it has ended."""
        call = streaming.Call(
            messages, context, strict, kwargs, semcache_threshold, semcache_read, semcache_write,
            semcache_ttl, semcache_replay_delay,
        )  # fmt: skip
        return self._streams.stream(  # type: ignore[no-any-return]
            streaming.shape("iterable", response_model), call,
            lambda: self.client.create_iterable(
                messages=messages, response_model=response_model, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            ),
        )  # fmt: skip

    def _cached(
        self, plan: Plan, messages: Any, max_retries: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        hit = self.pipeline.serve(plan)
        if hit is not None:
            if self.pipeline.shadow.sample(hit):
                self._shadows.submit(hit, messages, plan, max_retries, kwargs)
            return hit.value, hit.completion
        value, completion = self.client.create_with_completion(
            messages=messages, response_model=plan.response_model, max_retries=max_retries,
            context=plan.context, strict=plan.strict, **kwargs,
        )  # fmt: skip
        self.pipeline.save(plan, value, completion)
        return value, completion

    def drain(self, timeout: float | None = None) -> None:
        """Wait for background shadow calls (before exiting, or in tests)."""
        self._shadows.drain(timeout)


class AsyncCachedInstructor(_Wrapper):
    """An asynchronous instructor client with a semantic cache in front of it."""

    @property
    def chat(self) -> AsyncCachedInstructor:
        return self

    @property
    def completions(self) -> AsyncCachedInstructor:
        return self

    @property
    def messages(self) -> AsyncCachedInstructor:
        return self

    async def create(
        self,
        response_model: type[T],
        messages: Any,
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        semcache_ttl: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Like instructor's async ``create`` (``stream=True``: as the sync ``create``)."""

        def live() -> Any:
            return self.client.create(
                response_model=response_model, messages=messages, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            )  # fmt: skip

        shape = streaming.stream_shape(response_model) if kwargs.get("stream") else None
        if shape is not None:
            call = streaming.Call(
                messages, context, strict, kwargs, semcache_threshold, semcache_read,
                semcache_write, semcache_ttl, None,
            )  # fmt: skip
            return self._streams.astream(shape, call, live)  # type: ignore[return-value]
        plan = self._calls.plan(
            response_model, messages, context, strict, kwargs,
            semcache_threshold, semcache_read, semcache_write, semcache_ttl,
        )  # fmt: skip
        if plan is None:
            return await live()  # type: ignore[no-any-return]
        return (await self._acached(plan, messages, max_retries, kwargs))[0]  # type: ignore[no-any-return]

    async def create_with_completion(
        self,
        messages: Any,
        response_model: type[T],
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        semcache_ttl: float | None = None,
        **kwargs: Any,
    ) -> tuple[T, Any]:
        """Like instructor's async ``create_with_completion``."""
        plan = self._calls.plan(
            response_model, messages, context, strict, kwargs,
            semcache_threshold, semcache_read, semcache_write, semcache_ttl,
        )  # fmt: skip
        if plan is None:
            return await self.client.create_with_completion(  # type: ignore[no-any-return]
                messages=messages, response_model=response_model, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            )  # fmt: skip
        return await self._acached(plan, messages, max_retries, kwargs)

    def create_partial(
        self,
        response_model: type[T],
        messages: Any,
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        semcache_ttl: float | None = None,
        semcache_replay_delay: float | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[T, None]:
        """Like instructor's async ``create_partial``: partial objects replayed from the cache
        (``semcache_replay_delay`` seconds apart), or the provider's stream, whose answer is stored
        once the stream has ended and validates. See ``semcache.integrations.streaming``."""
        call = streaming.Call(
            messages, context, strict, kwargs, semcache_threshold, semcache_read, semcache_write,
            semcache_ttl, semcache_replay_delay,
        )  # fmt: skip
        return self._streams.astream(
            streaming.shape("partial", response_model), call,
            lambda: self.client.create_partial(
                response_model=response_model, messages=messages, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            ),
        )  # fmt: skip

    def create_iterable(
        self,
        messages: Any,
        response_model: type[T],
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        semcache_ttl: float | None = None,
        semcache_replay_delay: float | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[T, None]:
        """Like instructor's async ``create_iterable``: each item of a cached list as its object
        closes, or the provider's stream, stored once it has ended."""
        call = streaming.Call(
            messages, context, strict, kwargs, semcache_threshold, semcache_read, semcache_write,
            semcache_ttl, semcache_replay_delay,
        )  # fmt: skip
        return self._streams.astream(
            streaming.shape("iterable", response_model), call,
            lambda: self.client.create_iterable(
                messages=messages, response_model=response_model, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            ),
        )  # fmt: skip

    async def _acached(
        self, plan: Plan, messages: Any, max_retries: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        hit = await asyncio.to_thread(self.pipeline.serve, plan)
        if hit is not None:
            if self.pipeline.shadow.sample(hit):
                self._shadows.spawn(hit, messages, plan, max_retries, kwargs)
            return hit.value, hit.completion
        value, completion = await self.client.create_with_completion(
            messages=messages, response_model=plan.response_model, max_retries=max_retries,
            context=plan.context, strict=plan.strict, **kwargs,
        )  # fmt: skip
        await asyncio.to_thread(self.pipeline.save, plan, value, completion)
        return value, completion

    async def adrain(self) -> None:
        """Wait for background shadow tasks started on this event loop."""
        await self._shadows.adrain()


CachedClient: TypeAlias = CachedInstructor | AsyncCachedInstructor
