"""Wrap an instructor client so that its structured calls go through a ``SemanticCache``.

The wrapper has the client's interface: ``create``, ``create_with_completion``,
``chat.completions.create`` and ``messages.create`` consult the cache; ``create_partial``,
``create_iterable`` and any call with ``stream=True`` always reach the provider (a stream is not
cached); everything else is delegated untouched.

Three per-call parameters, visible in the signatures below, control the cache:
``semcache_threshold`` (a cosine similarity for this call), ``semcache_read=False`` (do not serve
from the cache) and ``semcache_write=False`` (do not store the answer).

The sync and async wrappers share ``_Calls``: they differ only in how they call the provider and in
running cache work in a thread (``asyncio.to_thread``) so the event loop never waits on SQLite or
the embedding model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from semcache.errors import UsageError

if TYPE_CHECKING:
    from semcache.cache import Plan, SemanticCache


def wrap(cache: SemanticCache, client: Any) -> CachedInstructor:
    """Return a cached view of an instructor client (``Instructor`` or ``AsyncInstructor``)."""
    if not hasattr(client, "create_with_completion") or not hasattr(client, "create_fn"):
        raise UsageError(
            "wrap() takes an instructor client (instructor.from_openai(...), from_provider(...), "
            f"from_litellm(...)); got {type(client).__name__}"
        )
    import instructor

    if isinstance(client, instructor.AsyncInstructor):
        return AsyncCachedInstructor(cache, client)
    return CachedInstructor(cache, client)


class _Calls:
    """What both wrappers share: turning a call into a cache ``Plan`` (or None to pass through)."""

    def __init__(self, cache: SemanticCache, client: Any) -> None:
        self.cache = cache
        self.client = client

    def plan(
        self,
        response_model: Any,
        messages: Any,
        context: Mapping[str, Any] | None,
        strict: bool,
        kwargs: dict[str, Any],
        threshold: float | None,
        read: bool,
        write: bool,
    ) -> Plan | None:
        if kwargs.get("stream") or not (read or write):
            return None
        # The client's defaults (from_provider's model, say) apply unless the call overrides them,
        # exactly as instructor's own handle_kwargs merges them.
        merged = {**getattr(self.client, "kwargs", {}), **kwargs}
        model = merged.pop("model", None) or getattr(self.client, "default_model", None)
        return self.cache.plan(
            messages=messages,
            response_model=response_model,
            model=model,
            context=context,
            strict=strict,
            provider=_value(getattr(self.client, "provider", "unknown")),
            mode=_value(getattr(self.client, "mode", "unknown")),
            params=merged,
            threshold=threshold,
            read=read,
            write=write,
        )


class CachedInstructor:
    """A synchronous instructor client with a semantic cache in front of it."""

    def __init__(self, cache: SemanticCache, client: Any) -> None:
        self._calls = _Calls(cache, client)
        self.client = client
        self.cache = cache

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
        response_model: Any,
        messages: Any,
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Like instructor's ``create``: the cached answer, or the provider's (then stored)."""
        plan = self._calls.plan(
            response_model, messages, context, strict, kwargs,
            semcache_threshold, semcache_read, semcache_write,
        )  # fmt: skip
        if plan is None:
            return self.client.create(
                response_model=response_model, messages=messages, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            )  # fmt: skip
        return self._cached(plan, messages, max_retries, kwargs)[0]

    def create_with_completion(
        self,
        messages: Any,
        response_model: Any,
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Like instructor's ``create_with_completion``; on a hit the completion is the stored one,
        restored as nested ``SimpleNamespace``."""
        plan = self._calls.plan(
            response_model, messages, context, strict, kwargs,
            semcache_threshold, semcache_read, semcache_write,
        )  # fmt: skip
        if plan is None:
            return self.client.create_with_completion(  # type: ignore[no-any-return]
                messages=messages, response_model=response_model, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            )  # fmt: skip
        return self._cached(plan, messages, max_retries, kwargs)

    def _cached(
        self, plan: Plan, messages: Any, max_retries: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        hit = self.cache.serve(plan)
        if hit is not None:
            return hit.value, hit.completion
        value, completion = self.client.create_with_completion(
            messages=messages, response_model=plan.response_model, max_retries=max_retries,
            context=plan.context, strict=plan.strict, **kwargs,
        )  # fmt: skip
        self.cache.save(plan, value, completion)
        return value, completion

    def create_partial(self, *args: Any, **kwargs: Any) -> Any:
        """Streams partial objects from the provider; never cached."""
        return self.client.create_partial(*args, **kwargs)

    def create_iterable(self, *args: Any, **kwargs: Any) -> Any:
        """Streams objects from the provider; never cached."""
        return self.client.create_iterable(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


class AsyncCachedInstructor(CachedInstructor):
    """An asynchronous instructor client with a semantic cache in front of it."""

    async def create(  # type: ignore[override]
        self,
        response_model: Any,
        messages: Any,
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Like instructor's async ``create``."""
        plan = self._calls.plan(
            response_model, messages, context, strict, kwargs,
            semcache_threshold, semcache_read, semcache_write,
        )  # fmt: skip
        if plan is None:
            return await self.client.create(
                response_model=response_model, messages=messages, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            )  # fmt: skip
        return (await self._acached(plan, messages, max_retries, kwargs))[0]

    async def create_with_completion(  # type: ignore[override]
        self,
        messages: Any,
        response_model: Any,
        max_retries: Any = 3,
        context: dict[str, Any] | None = None,
        strict: bool = True,
        *,
        semcache_threshold: float | None = None,
        semcache_read: bool = True,
        semcache_write: bool = True,
        **kwargs: Any,
    ) -> tuple[Any, Any]:
        """Like instructor's async ``create_with_completion``."""
        plan = self._calls.plan(
            response_model, messages, context, strict, kwargs,
            semcache_threshold, semcache_read, semcache_write,
        )  # fmt: skip
        if plan is None:
            return await self.client.create_with_completion(  # type: ignore[no-any-return]
                messages=messages, response_model=response_model, max_retries=max_retries,
                context=context, strict=strict, **kwargs,
            )  # fmt: skip
        return await self._acached(plan, messages, max_retries, kwargs)

    async def _acached(
        self, plan: Plan, messages: Any, max_retries: Any, kwargs: dict[str, Any]
    ) -> tuple[Any, Any]:
        hit = await asyncio.to_thread(self.cache.serve, plan)
        if hit is not None:
            return hit.value, hit.completion
        value, completion = await self.client.create_with_completion(
            messages=messages, response_model=plan.response_model, max_retries=max_retries,
            context=plan.context, strict=plan.strict, **kwargs,
        )  # fmt: skip
        await asyncio.to_thread(self.cache.save, plan, value, completion)
        return value, completion


def _value(item: Any) -> str:
    """An enum's value (instructor's Mode and Provider), or the string form of anything else."""
    return str(getattr(item, "value", item))
