"""Request keys: the exact key, the semantic scope and the text to embed.

A request is everything that can change the answer: provider, model, mode, every message, the
response_model's JSON schema, strictness, the template context and every other parameter sent to the
provider (temperature, top_p, seed, max_tokens, stop, tools, ...), plus the cache namespace.

* The **exact key** is the SHA-256 of a canonical JSON of the whole request.
* The **scope** is the SHA-256 of the same request with the variable part taken out: the content of
  the last user message, or, for a templated message, the values of the variables it renders. Two
  requests may only share a semantic hit when their scopes are equal.
* The **text** is that variable part, the thing that is embedded and compared.

Canonical means key order does not matter but types do: ``1``, ``1.0``, ``True`` and ``"1"`` all give
different keys. Values that JSON cannot carry unambiguously are tagged (``{"$bytes": ...}``) and user
keys starting with ``$`` are escaped, so no two different requests can produce the same JSON. A value
we cannot canonicalize raises ``UncacheableRequestError``: such a request is not cached at all rather
than given a key that might be shared (instructor's own keys once ignored system prompts and sampling
parameters and served one request's answer to another).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import math
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from semcache.errors import UncacheableRequestError

KEY_FORMAT = 1

# Parameters that cannot change what the provider answers, or that must never reach the cache file
# (headers carry credentials). Everything else a caller passes is part of the key, so a parameter
# added by a provider next year is covered without a change here.
IGNORED_PARAMS = frozenset(
    {"max_retries", "hooks", "timeout", "extra_headers", "stream", "api_key", "base_url"}
)

TextFn = Callable[[Sequence[Any], "Mapping[str, Any] | None"], "str | None"]

_TEMPLATE_BLOCK = re.compile(r"\{[{%](.*?)[}%]\}", re.DOTALL)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SIMPLE_VAR = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\|[^}]*)?\}\}")


@dataclass(frozen=True)
class KeyedRequest:
    """The keys of one request, computed once before any provider call can mutate it."""

    exact_key: str
    scope: str
    text: str | None  # None: the request is only ever served by the exact tier
    namespace: str
    model: str | None
    schema_name: str
    request_json: str  # the canonical request, stored for inspection


def canonical(value: Any) -> Any:
    """Return a JSON-native structure that identifies ``value`` without ambiguity.

    Raises ``UncacheableRequestError`` for anything that has no unambiguous JSON form.
    """
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                # Lone surrogates: no provider accepts them and SQLite cannot store them.
                raise UncacheableRequestError("text with lone surrogates in request") from None
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UncacheableRequestError(f"non-finite float {value!r} in request")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                # json would turn 1 and "1" into the same key; refuse instead.
                raise UncacheableRequestError(f"non-string mapping key {key!r} in request")
            out["$" + key if key.startswith("$") else key] = canonical(item)
        return out
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    if isinstance(value, enum.Enum):
        return {"$enum": [_qualname(type(value)), canonical(value.value)]}
    if isinstance(value, BaseModel):
        return {"$model": [_qualname(type(value)), canonical(value.model_dump(mode="json"))]}
    if isinstance(value, type) and issubclass(value, BaseModel):
        return {"$schema": schema_fingerprint(value)[0]}
    if isinstance(value, (bytes, bytearray)):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    raise UncacheableRequestError(f"cannot build a cache key for a {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Serialize ``value`` canonically: sorted keys, no spaces, ASCII (lone surrogates escaped)."""
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def sha256_hex(text: str) -> str:
    """Hex SHA-256 of a canonical JSON string (ASCII by construction)."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


_SCHEMAS: weakref.WeakKeyDictionary[type[BaseModel], tuple[str, str]] = weakref.WeakKeyDictionary()


def schema_fingerprint(model: type[BaseModel]) -> tuple[str, str]:
    """Return ``(sha256 of the JSON schema, schema title)``, computed once per class.

    ``model_json_schema()`` costs milliseconds on a nested model, so it must not run per call. A
    class is immutable in practice; editing a field means a new class object on reload, hence a new
    fingerprint.
    """
    cached = _SCHEMAS.get(model)
    if cached is None:
        schema = model.model_json_schema()
        cached = (sha256_hex(canonical_json(schema)), str(schema.get("title", model.__name__)))
        _SCHEMAS[model] = cached
    return cached


def build_key(
    *,
    provider: str,
    mode: str,
    model: str | None,
    messages: Sequence[Any],
    response_model: type[BaseModel],
    context: Mapping[str, Any] | None,
    strict: bool,
    params: Mapping[str, Any],
    namespace: str,
    text_fn: TextFn | None = None,
) -> KeyedRequest:
    """Compute the exact key, the scope and the text to embed of one request.

    Raises ``UncacheableRequestError`` when any part cannot be canonicalized.
    """
    schema_hash, schema_name = schema_fingerprint(response_model)
    base = {
        "v": KEY_FORMAT,
        "provider": provider,
        "mode": mode,
        "model": model,
        "schema": schema_hash,
        "strict": strict,
        "namespace": namespace,
        "params": canonical({k: v for k, v in params.items() if k not in IGNORED_PARAMS}),
    }
    messages_c = canonical(list(messages))
    context_c = canonical(dict(context)) if context is not None else None
    request_json = json.dumps(
        {**base, "messages": messages_c, "context": context_c},
        sort_keys=True,
        separators=(",", ":"),
    )
    exact_key = sha256_hex('{"tier":"exact","request":' + request_json + "}")

    text, scope_messages, scope_context = _split_variable_part(messages_c, context_c)
    if text_fn is not None:
        text = text_fn(messages, context)
    if text is not None and not text.strip():
        text = None
    scope_json = json.dumps(
        {**base, "messages": scope_messages, "context": scope_context},
        sort_keys=True,
        separators=(",", ":"),
    )
    scope = sha256_hex('{"tier":"scope","request":' + scope_json + "}")
    return KeyedRequest(
        exact_key=exact_key,
        scope=scope,
        text=text,
        namespace=namespace,
        model=model,
        schema_name=schema_name,
        request_json=request_json,
    )


def _split_variable_part(
    messages: list[Any], context: dict[str, Any] | None
) -> tuple[str | None, list[Any], Any]:
    """Split canonical messages into (text to embed, scope messages, scope context).

    The last user message is the variable part. When it is a template rendered from ``context``,
    the template stays in the scope and only the values of the variables it renders are embedded,
    so a long shared template does not make every request look alike. Variables the last user
    message does not render plainly (system prompt variables, loops) stay in the scope.
    """
    index = _last_user_index(messages)
    if index is None:
        return None, messages, context
    content = messages[index].get("content")
    text = _plain_text(content)
    if text is None:
        # Images, audio or other parts that a text embedding cannot see: exact tier only.
        return None, messages, context

    if context and "{{" in text:
        names = list(dict.fromkeys(_SIMPLE_VAR.findall(text)))
        # A variable also rendered elsewhere (say, in the system prompt) changes that part too, so
        # it must match exactly: it stays in the scope.
        elsewhere = _template_names(json.dumps([m for i, m in enumerate(messages) if i != index]))
        embedded = [
            n for n in names if n in context and _renderable(context[n]) and n not in elsewhere
        ]
        if embedded:
            values = "\n".join(_render_value(context[n]) for n in embedded)
            scope_context = {k: v for k, v in context.items() if k not in embedded}
            scope_context["$embedded_vars"] = embedded
            return values, messages, scope_context

    scope_messages = list(messages)
    scope_messages[index] = {**messages[index], "content": {"$variable": True}}
    return text, scope_messages, context


def _template_names(text: str) -> set[str]:
    """Every identifier used inside a ``{{ }}`` or ``{% %}`` block of ``text``."""
    names: set[str] = set()
    for block in _TEMPLATE_BLOCK.findall(text):
        names.update(_IDENTIFIER.findall(block))
    return names


def _last_user_index(messages: list[Any]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            return i
    return None


def _plain_text(content: Any) -> str | None:
    """The text of a message's content, or None when it holds anything but text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                if not isinstance(part.get("text"), str):
                    return None
                texts.append(part["text"])
            else:
                return None
        return "\n".join(texts)
    return None


def _renderable(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _render_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
