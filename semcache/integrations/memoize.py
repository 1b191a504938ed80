"""Cache plain functions that return a Pydantic model, through the same two tiers as LLM calls.

``memoize(cache, text="question")`` turns a call into a cache request:

* the **text** to compare by meaning is the value of one argument (``text="question"``), or what a
  function of some arguments returns (``text=lambda title, body: f"{title}\\n{body}"``: the text
  function's parameter names say which arguments it is made of);
* **every other argument** is part of the scope, together with the function's qualified name:
  compared exactly, so a call with ``tone="formal"`` is never served the answer to
  ``tone="plain"``, however close the questions are;
* the return annotation is the response model the stored JSON is validated against on a hit.

A call whose arguments cannot be put in a key unambiguously (an open file, a client object, a
NaN) simply runs uncached, as a request semcache cannot key goes to the provider. The key is taken
before the function runs, so a function that mutates its arguments cannot change what it is
stored under. The sync and async wrappers share ``_Memo``; the async one runs the cache's SQLite
and embedding work in a thread so the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import typing
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from semcache.errors import UsageError
from semcache.pipeline import Front
from semcache.requests import Plan

logger = logging.getLogger("semcache")

F = TypeVar("F", bound=Callable[..., Any])

TextSource = str | Callable[..., str | None]

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def memoize(
    cache: Front,
    *,
    text: TextSource,
    namespace: str | None = None,
    threshold: float | None = None,
) -> Callable[[F], F]:
    """Return a decorator caching a function (sync or async) that returns a Pydantic model.

    ``text`` names the argument whose value is embedded and compared by meaning, or is a function
    whose parameters are named after the arguments it combines into that text; every other
    argument must match exactly. ``namespace`` separates this function's entries from earlier ones
    (bump it when the function's behaviour changes). ``threshold`` overrides the cache's
    similarity threshold for this function. Mistakes in the decoration itself (no model return
    annotation, an unknown argument name) raise ``UsageError`` at once, not at the first call.
    """
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise UsageError("namespace must be a non-empty string or None")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise UsageError(f"threshold must be a number, got {type(threshold).__name__}")
        if math.isnan(threshold) or not -1.0 <= threshold <= 1.0:
            raise UsageError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")

    def decorate(fn: F) -> F:
        memo = _Memo(cache, fn, text, namespace, threshold)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                plan = memo.plan(args, kwargs)
                if plan is None:
                    return await fn(*args, **kwargs)
                hit = await asyncio.to_thread(cache.pipeline.serve, plan)
                if hit is not None:
                    return hit.value
                value = await fn(*args, **kwargs)
                await asyncio.to_thread(memo.save, plan, value)
                return value

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            plan = memo.plan(args, kwargs)
            if plan is None:
                return fn(*args, **kwargs)
            hit = cache.pipeline.serve(plan)
            if hit is not None:
                return hit.value
            value = fn(*args, **kwargs)
            memo.save(plan, value)
            return value

        return cast(F, wrapper)

    return decorate


class _Memo:
    """What the sync and async wrappers share: turning a call into a ``Plan``, storing a result."""

    def __init__(
        self,
        cache: Front,
        fn: Callable[..., Any],
        text: TextSource,
        namespace: str | None,
        threshold: float | None,
    ) -> None:
        self.cache = cache
        self.signature = inspect.signature(fn)
        self.response_model = _response_model(fn)
        self.model = f"fn:{fn.__module__}.{fn.__qualname__}"
        self.namespace = namespace
        self.threshold = threshold
        self.text_names, self.text_fn = _text_source(text, self.signature, fn.__qualname__)

    def plan(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Plan | None:
        """The call's cache request, or None to run it uncached."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            return None  # the function itself raises the right error for a bad call
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        if self.text_fn is None:
            text = arguments[self.text_names[0]]
        else:
            text = self.text_fn(**{name: arguments[name] for name in self.text_names})
        if isinstance(text, str):
            rest = {k: v for k, v in arguments.items() if k not in self.text_names}
        else:
            # No text to embed (None, a number): the call is exact-only, and the arguments the text
            # would have stood for must then be matched exactly like the others.
            text, rest = None, arguments
        # Nested under one name: a function argument called, say, ``timeout`` or ``api_key`` would
        # otherwise be taken for a transport setting and left out of the key.
        params: dict[str, Any] = {"arguments": rest}
        if self.namespace is not None:
            params["memoize_namespace"] = self.namespace
        return self.cache.pipeline.plan(
            messages=[{"role": "user", "content": text}],
            response_model=self.response_model,
            model=self.model,
            context=None,
            strict=True,
            provider="python",
            mode="function",
            params=params,
            threshold=self.threshold,
        )

    def save(self, plan: Plan, value: Any) -> None:
        if isinstance(value, self.response_model):
            self.cache.pipeline.save(plan, value, None)
        else:
            logger.debug(
                "semcache: %s returned a %s, not a %s; not cached",
                self.model,
                type(value).__name__,
                self.response_model.__name__,
            )


def _response_model(fn: Callable[..., Any]) -> type[BaseModel]:
    """The Pydantic model ``fn`` is annotated to return (for a coroutine function, what it awaits)."""
    try:
        annotation = typing.get_type_hints(fn).get("return", inspect.Signature.empty)
    except Exception:  # a forward reference that cannot be resolved from the function's module
        annotation = inspect.signature(fn).return_annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    shown = "no return annotation" if annotation is inspect.Signature.empty else repr(annotation)
    raise UsageError(
        f"memoize needs a function annotated to return a Pydantic model (-> MyModel); "
        f"{fn.__qualname__} has {shown}"
    )


def _text_source(
    text: TextSource, signature: inspect.Signature, name: str
) -> tuple[tuple[str, ...], Callable[..., str | None] | None]:
    """Which arguments make up the text, and the function combining them (None: use the value)."""
    params = signature.parameters
    if isinstance(text, str):
        if text not in params:
            raise UsageError(f"text={text!r} is not a parameter of {name}{signature}")
        return (text,), None
    if not callable(text):
        raise UsageError("text must be a parameter name or a function of some parameters")
    try:
        text_params = inspect.signature(text).parameters.values()
    except (TypeError, ValueError) as exc:
        raise UsageError(f"cannot read the parameters of the text function: {exc}") from exc
    names = tuple(p.name for p in text_params if p.kind in _NAMED and p.name in params)
    unknown = [
        p.name
        for p in text_params
        if p.default is inspect.Parameter.empty
        and p.name not in names
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if unknown or not names:
        # The names are what keeps the other arguments in the exact-match scope: a text function
        # taking *args/**kwargs would hide which arguments it reads, so it is refused.
        raise UsageError(
            "the text function's parameters must be named after the arguments of "
            f"{name}{signature} it reads (e.g. text=lambda question: question); "
            f"{'unknown: ' + ', '.join(unknown) if unknown else 'it names none of them'}"
        )
    return names, text
