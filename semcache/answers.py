"""Whether two structured answers agree, field by field.

Because answers are Pydantic models, "would this hit have been right?" has a mechanical answer: the
fields of the cached answer equal those of the provider's answer, or they do not. Shadow checks
(a served hit against a fresh answer) and near-miss labels (a candidate just below the threshold
against the answer the provider gave instead) both ask it, so it is answered once, here.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel


def differing_fields(cached: Any, fresh: Any) -> list[str]:
    """The top-level fields whose values differ, sorted; empty when the answers agree.

    Each side is a model, a dict, or the JSON a cache row stores (``response_json``). Models are
    compared through their JSON form, so ``1.0`` and ``1`` or an enum and its value agree as they
    would once stored; a missing field differs from any value, even None.
    """
    a, b = _fields(cached), _fields(fresh)
    missing = object()
    return sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))


def _fields(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True)
    elif isinstance(value, (str, bytes)):
        value = json.loads(value)
    return value if isinstance(value, dict) else {"value": value}
