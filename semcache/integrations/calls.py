"""Turning a call on a wrapped instructor client into a cache ``Plan``, or None to pass it through.

The sync and async wrappers (``semcache.integrations.instructor``) and the streaming calls
(``semcache.integrations.streaming``) all key a request here, so a call is keyed the same way
whichever method made it: the client's default arguments merged as instructor merges them, the
model a ``from_provider`` client injects, the client's provider and mode.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from typing import Any

from semcache.integrations import instructor_internals as internals
from semcache.pipeline import Front
from semcache.requests import Plan

logger = logging.getLogger("semcache")


class Calls:
    """What both wrappers share: turning a call into a cache ``Plan`` (or None to pass through)."""

    def __init__(self, cache: Front, client: Any) -> None:
        self.pipeline = cache.pipeline
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
        ttl: float | None,
    ) -> Plan | None:
        if kwargs.get("stream") or not (read or write):
            return None
        reject_async_validators(response_model)
        # The client's defaults (from_provider's model, say) apply unless the call overrides them,
        # exactly as instructor's own handle_kwargs merges them.
        merged = {**getattr(self.client, "kwargs", {}), **kwargs}
        model = merged.pop("model", None) or default_model(self.client)
        if model is None:
            # The model is part of the key; a request whose model we cannot see could be served
            # another model's answer, so it is not cached.
            logger.debug("semcache: no model visible for this call; not cached")
            return None
        return self.pipeline.plan(
            messages=messages,
            response_model=response_model,
            model=model,
            context=context,
            strict=strict,
            provider=internals.enum_value(getattr(self.client, "provider", "unknown")),
            mode=internals.enum_value(getattr(self.client, "mode", "unknown")),
            params=merged,
            threshold=threshold,
            read=read,
            write=write,
            ttl=ttl,
        )


_CHECKED: weakref.WeakKeyDictionary[type, Exception | None] = weakref.WeakKeyDictionary()


def reject_async_validators(response_model: Any) -> None:
    """Raise what instructor's own ``create`` raises for a model with async validators.

    instructor refuses such models before calling the provider; a cache hit must not quietly
    succeed where the live call would fail. Checked once per class.
    """
    if not isinstance(response_model, type):
        return
    if response_model not in _CHECKED:
        reject_async_validators = internals.async_validator_check()
        if reject_async_validators is None:  # an instructor without the check
            _CHECKED[response_model] = None
            return
        try:
            reject_async_validators(response_model)
            _CHECKED[response_model] = None
        except Exception as exc:
            _CHECKED[response_model] = exc
    error = _CHECKED[response_model]
    if error is not None:
        raise error


def default_model(client: Any) -> str | None:
    """The model a client injects when a call names none (``from_provider("openai/gpt-4o")``).

    instructor keeps it in the closure of its patched create function rather than on the client,
    so it is read from there.
    """
    found = getattr(client, "default_model", None)
    if isinstance(found, str):
        return found
    return internals.closure_default_model(getattr(client, "create_fn", None))
