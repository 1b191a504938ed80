"""Streaming calls through the cache (issue #13): a live stream recorded, a stored answer replayed.

``create_partial``, ``create_iterable`` and ``create(..., stream=True)`` with a ``Partial[M]`` or
``Iterable[M]`` response model come here from the wrappers in ``semcache.integrations.instructor``.

**A miss.** The provider's stream goes to the caller object by object, as instructor yields it;
``Recorder`` keeps the last partial object (or every item). Only when the stream has ended
normally is the assembled answer validated against the full model M (not the partial one) and
stored. A stream that raises (a network error, a timeout, instructor's validation), that the
caller abandons (``break``, ``close()``, garbage collection) or whose answer does not validate
stores nothing.

**A hit.** The stored answer, as JSON text, is cut into chunks and fed through instructor's own
parser (``Partial[M].model_from_chunks``, ``IterableModel(M).tasks_from_chunks``), so a cached
stream is made of the same objects a live one is: several partial objects with fields filling in,
the last one validated by instructor and equal to the stored answer, or each item as its object
closes. ``semcache_replay_delay`` spaces the objects out for a UI. Each object carries the hit
(``cache_hit(obj)``); the lookup counts, emits events and writes the audit log like any other.

**One entry per request.**

- Partial objects are keyed and scoped by M, exactly as ``create(response_model=M)``: the same
  entry serves ``create``, ``create_with_completion`` and ``create_partial``, whichever stored it.
- An iterable call asks the provider for a list, ``IterableModel(M)`` (one field, ``tasks``), and
  that model keys it: its entry is the JSON ``{"tasks": [...]}``. Keyed by M it would share the
  exact key of ``create(response_model=M)``, a request for one object, and the two answers would
  replace each other. ``create_iterable`` and ``create(stream=True, response_model=Iterable[M])``
  share it; ``CacheHit.value`` of such a hit is the ``IterableModel(M)`` instance.

**What is left.**

- A stream cut short that still ends cleanly (``finish_reason="length"``: OpenAI streams do not
  raise, and instructor's stream parsers give no sign of it) is stored when what arrived still
  validates against M: a string field cut mid-word with every required field present, or a list
  missing its last items. Validation catches the common case (a required field not reached).
- A completed iterable stream with no item is not stored (it cannot be told from one cut before
  its first item closed).
- A stream's raw completion is not kept (it is the consumed stream), so an entry stored from a
  stream has none: ``create_with_completion`` served from it returns None as the completion, and
  ``tokens_avoided`` does not count it.
- Streamed hits are not sampled for shadow checks (the caller holds the stream; there is no
  single answer to compare until it ends).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

from semcache.errors import UsageError
from semcache.integrations import instructor_internals as internals
from semcache.integrations.calls import Calls, reject_async_validators
from semcache.pipeline import Pipeline
from semcache.requests import Plan
from semcache.serialization import attach
from semcache.types import CacheHit

logger = logging.getLogger("semcache")

Kind = Literal["partial", "iterable"]

# A replayed answer is cut into chunks of at least this many characters (about two tokens, as a
# provider sends them) and at most _MAX_CHUNKS of them: each chunk re-parses the text so far, so a
# long answer replays in bounded time.
_CHUNK = 8
_MAX_CHUNKS = 64


@dataclass(frozen=True)
class Shape:
    """What a streaming call asks for: partial objects of ``base``, or the items of a list of it."""

    kind: Kind
    base: type[BaseModel]

    @property
    def keyed(self) -> type[BaseModel]:
        """The model the request is keyed by and its answer stored as."""
        return self.base if self.kind == "partial" else internals.iterable_model(self.base)


def shape(kind: Kind, response_model: Any) -> Shape | None:
    """The shape of ``create_partial``/``create_iterable``; None (pass through) unless the
    response model is a Pydantic model class."""
    if isinstance(response_model, type) and issubclass(response_model, BaseModel):
        return Shape(kind, response_model)
    return None


def stream_shape(response_model: Any) -> Shape | None:
    """The shape of ``create(..., stream=True)``: ``Partial[M]`` or ``Iterable[M]``. Anything else
    passes through, a plain M included: instructor cannot stream it, and a hit must not succeed
    where the live call fails."""
    base = internals.partial_base(response_model)
    if base is not None:
        return Shape("partial", base)
    args = get_args(response_model)
    if get_origin(response_model) is Iterable and len(args) == 1:
        return shape("iterable", args[0])
    return None


def check_delay(delay: float | None) -> float:
    """``semcache_replay_delay``: seconds between replayed objects, a finite number >= 0."""
    if delay is None:
        return 0.0
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay):
        raise UsageError(f"semcache_replay_delay must be a number of seconds, got {delay!r}")
    if delay < 0:
        raise UsageError(f"semcache_replay_delay must be >= 0, got {delay}")
    return float(delay)


def chunks(text: str) -> list[str]:
    """``text`` cut as a provider might stream it."""
    size = max(_CHUNK, -(-len(text) // _MAX_CHUNKS))
    return [text[i : i + size] for i in range(0, len(text), size)]


def _parse_kwargs(plan: Plan) -> dict[str, Any]:
    """The validation arguments instructor's streaming parsers get from a live call."""
    kwargs: dict[str, Any] = {"strict": plan.strict}
    if plan.context is not None:
        kwargs["context"] = plan.context
    return kwargs


def replayed(hit: CacheHit, shape: Shape, plan: Plan) -> Iterator[Any]:
    """The objects a live stream of the stored answer yields, built by instructor's parser."""
    text = hit.value.model_dump_json(by_alias=True)
    if shape.kind == "partial":
        parser = internals.partial_parser(shape.base)
    else:
        parser = internals.iterable_parser(plan.response_model)
    for obj in parser(iter(chunks(text)), **_parse_kwargs(plan)):
        attach(obj, "_semcache_hit", hit)
        yield obj


def replay(hit: CacheHit, shape: Shape, plan: Plan, delay: float) -> Generator[Any, None, None]:
    """A cached stream, ``delay`` seconds between objects."""
    for i, obj in enumerate(replayed(hit, shape, plan)):
        if i and delay:
            time.sleep(delay)
        yield obj


async def areplay(
    hit: CacheHit, shape: Shape, plan: Plan, delay: float
) -> AsyncGenerator[Any, None]:
    """A cached stream on the event loop, ``delay`` seconds between objects."""
    for i, obj in enumerate(replayed(hit, shape, plan)):
        if i and delay:
            await asyncio.sleep(delay)
        yield obj


@dataclass
class Recorder:
    """What a live stream has yielded so far, and its answer once the stream has ended."""

    pipeline: Pipeline
    shape: Shape
    plan: Plan
    items: list[Any] = field(default_factory=list)

    def see(self, item: Any) -> None:
        if self.shape.kind == "partial":
            self.items[:] = [item]  # each partial object holds everything so far
        else:
            self.items.append(item)

    def answer(self) -> BaseModel | None:
        """The assembled answer validated against the full model; None when it does not
        validate (the stream was cut short, or held nothing)."""
        plan = self.plan
        if not self.items or not all(isinstance(item, BaseModel) for item in self.items):
            return None
        try:
            # A partial object built without validation may hold None in a required field:
            # pydantic would warn while serializing it, and the validation below refuses it.
            if self.shape.kind == "partial":
                text = self.items[0].model_dump_json(by_alias=True, warnings=False)
            else:
                dumped = [i.model_dump(mode="json", by_alias=True) for i in self.items]
                text = json.dumps({internals.ITERABLE_FIELD: dumped})
            return plan.response_model.model_validate_json(
                text, context=plan.context, strict=plan.strict
            )
        except Exception as exc:  # ValidationError, or a validator raising something else
            logger.debug("semcache: streamed answer does not validate; not cached: %s", exc)
            return None


def record(stream: Iterable[Any], recorder: Recorder) -> Generator[Any, None, None]:
    """Pass a live stream through untouched; store its answer only if it ends normally."""
    try:
        for item in stream:
            recorder.see(item)
            yield item
    finally:  # abandoned or failed: release the provider's stream now, not at garbage collection
        close = getattr(stream, "close", None)
        if callable(close):
            close()
    value = recorder.answer()
    if value is not None:
        recorder.pipeline.save(recorder.plan, value, None)


async def arecord(stream: AsyncIterator[Any], recorder: Recorder) -> AsyncGenerator[Any, None]:
    """``record`` for an async stream; the store runs in a thread, off the event loop."""
    try:
        async for item in stream:
            recorder.see(item)
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        if callable(aclose):
            await aclose()
    value = recorder.answer()
    if value is not None:
        await asyncio.to_thread(recorder.pipeline.save, recorder.plan, value, None)


@dataclass(frozen=True)
class Call:
    """The arguments of one streaming call that key it and steer the cache."""

    messages: Any
    context: Mapping[str, Any] | None
    strict: bool
    kwargs: dict[str, Any]
    threshold: float | None
    read: bool
    write: bool
    ttl: float | None
    delay: float | None


class Streams:
    """The streaming calls of one wrapped client: keyed by ``Calls``, served by the pipeline.

    ``live`` makes the call on the wrapped client; it runs only on a miss, or when the call is not
    cached at all, and then its result goes to the caller exactly as instructor returns it.
    """

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.pipeline = calls.pipeline

    def _plan(self, shape: Shape | None, call: Call) -> Plan | None:
        if shape is None:
            return None
        reject_async_validators(shape.base)  # as instructor does, before the provider is called
        params = {k: v for k, v in call.kwargs.items() if k != "stream"}
        return self.calls.plan(
            shape.keyed, call.messages, call.context, call.strict, params,
            call.threshold, call.read, call.write, call.ttl,
        )  # fmt: skip

    def stream(self, shape: Shape | None, call: Call, live: Callable[[], Any]) -> Any:
        """A sync call: the replayed stream, the recorded live one, or ``live()`` untouched."""
        delay = check_delay(call.delay)
        plan = self._plan(shape, call)
        if shape is None or plan is None:
            return live()
        hit = self.pipeline.serve(plan)
        if hit is not None:
            return replay(hit, shape, plan, delay)
        return record(live(), Recorder(self.pipeline, shape, plan))

    async def astream(
        self, shape: Shape | None, call: Call, live: Callable[[], Any]
    ) -> AsyncGenerator[Any, None]:
        """An async call. Like instructor's own, it does nothing before the first ``__anext__``."""
        delay = check_delay(call.delay)
        plan = self._plan(shape, call)
        hit = None if plan is None else await asyncio.to_thread(self.pipeline.serve, plan)
        source: Any
        if hit is not None and shape is not None and plan is not None:
            source = areplay(hit, shape, plan, delay)
        else:
            source = live()
            if inspect.isawaitable(source):  # create(stream=True) is a coroutine of the stream
                source = await source
            if shape is not None and plan is not None:
                source = arecord(source, Recorder(self.pipeline, shape, plan))
        try:
            async for item in source:
                yield item
        finally:
            aclose = getattr(source, "aclose", None)
            if callable(aclose):
                await aclose()
