"""Raw completions to JSON and back, defensively.

A hit must make ``create_with_completion`` behave as a live call, so the provider's raw completion is
stored too and restored as nested ``SimpleNamespace`` (``completion.usage.total_tokens`` and
``completion.choices[0].message`` work without the provider's classes). Providers return pydantic
objects (OpenAI, Anthropic), dicts, or something else entirely; each gets the most faithful JSON
form available, and nothing is ever pickled.
"""

from __future__ import annotations

import json
import logging
import warnings
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel

logger = logging.getLogger("semcache")


def dump_completion(completion: Any) -> tuple[str | None, str | None, int]:
    """Return ``(raw JSON, usage JSON, total tokens)`` for a provider's raw completion."""
    if completion is None:
        return None, None, 0
    data: Any
    if isinstance(completion, BaseModel):
        raw_json = completion.model_dump_json()
        data = json.loads(raw_json)
    elif isinstance(completion, dict):
        raw_json = json.dumps(completion, default=str, ensure_ascii=False)
        data = json.loads(raw_json)
    else:
        warnings.warn(
            f"semcache: a {type(completion).__name__} completion is stored as its string form",
            RuntimeWarning,
            stacklevel=3,
        )
        data = str(completion)
        raw_json = json.dumps(data, ensure_ascii=False)
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return raw_json, None, 0
    return raw_json, json.dumps(usage, ensure_ascii=False), _total_tokens(usage)


def restore_completion(raw_json: str | None) -> Any:
    """The stored completion with attribute access: dicts become ``SimpleNamespace``."""
    if raw_json is None:
        return None
    try:
        return json.loads(raw_json, object_hook=lambda d: SimpleNamespace(**d))
    except (ValueError, TypeError) as exc:
        logger.debug("semcache: stored completion is not valid JSON: %s", exc)
        return None


def attach(value: BaseModel, name: str, item: Any) -> None:
    """Set a private attribute on a model instance, frozen models included."""
    try:
        setattr(value, name, item)
    except (AttributeError, TypeError, ValueError):
        object.__setattr__(value, name, item)


def _total_tokens(usage: dict[str, Any]) -> int:
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    parts = [
        usage.get(k)
        for k in ("input_tokens", "output_tokens", "prompt_tokens", "completion_tokens")
    ]
    return sum(p for p in parts if isinstance(p, int) and not isinstance(p, bool))
