"""Exact keys, scopes and the text to embed: what must and must not change them."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from semcache.errors import UncacheableRequestError
from semcache.keys import KeyedRequest, build_key, canonical_json, schema_fingerprint


class Ticket(BaseModel):
    category: str


class Other(BaseModel):
    category: str
    urgent: bool = False


SYSTEM = {"role": "system", "content": "Extract the ticket."}


def key(text: str = "My order never arrived", **over: Any) -> KeyedRequest:
    args: dict[str, Any] = {
        "provider": "openai",
        "mode": "tool_call",
        "model": "gpt-4o-mini",
        "messages": [SYSTEM, {"role": "user", "content": text}],
        "response_model": Ticket,
        "context": None,
        "strict": True,
        "params": {},
        "namespace": "default",
    }
    args.update(over)
    return build_key(**args)


def test_same_request_same_keys() -> None:
    assert key() == key()


def test_only_the_text_varies_within_a_scope() -> None:
    a, b = key("My order never arrived"), key("My parcel did not come")
    assert a.exact_key != b.exact_key
    assert a.scope == b.scope
    assert (a.text, b.text) == ("My order never arrived", "My parcel did not come")


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"provider": "anthropic"},
        {"mode": "json"},
        {"response_model": Other},
        {"strict": False},
        {"namespace": "tenant-b"},
        {"params": {"temperature": 0.2}},
        {"params": {"top_p": 0.5}},
        {"params": {"seed": 1}},
        {"params": {"max_tokens": 10}},
        {"params": {"stop": ["\n"]}},
        {"params": {"tools": [{"type": "function", "function": {"name": "x"}}]}},
        {
            "messages": [
                {"role": "system", "content": "Other system"},
                {"role": "user", "content": "My order never arrived"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "earlier"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "My order never arrived"},
            ]
        },
        {"context": {"tenant": "x"}},
    ],
)
def test_everything_but_the_text_changes_both_keys(change: dict[str, Any]) -> None:
    base, changed = key(), key(**change)
    assert base.exact_key != changed.exact_key
    assert base.scope != changed.scope


def test_transport_params_do_not_change_keys() -> None:
    base = key()
    same = key(params={"max_retries": 5, "timeout": 3, "extra_headers": {"Authorization": "x"}})
    assert base == same
    assert "Authorization" not in same.request_json


def test_types_matter() -> None:
    keys = {key(params={"seed": v}).exact_key for v in (1, 1.0, True, "1", [1], None)}
    assert len(keys) == 6


def test_key_order_does_not_matter() -> None:
    a = key(params={"temperature": 0, "top_p": 1, "response_format": {"a": 1, "b": 2}})
    b = key(params={"response_format": {"b": 2, "a": 1}, "top_p": 1, "temperature": 0})
    assert a == b


@pytest.mark.parametrize(
    "bad",
    [object(), {1: "int key"}, float("nan"), float("inf"), {"x": {1, 2}}],
    ids=["object", "int-key", "nan", "inf", "set"],
)
def test_unserializable_values_are_refused(bad: Any) -> None:
    with pytest.raises(UncacheableRequestError):
        key(params={"extra": bad})


def test_tagged_values_cannot_collide_with_user_dicts() -> None:
    assert canonical_json(b"\x00") != canonical_json({"$bytes": "00"})
    assert canonical_json({"$bytes": "00"}) != canonical_json({"$$bytes": "00"})
    assert canonical_json(dt.date(2024, 1, 2)) != canonical_json("2024-01-02")


def test_templated_prompt_embeds_only_the_variables() -> None:
    template = "Read this support ticket carefully and extract it.\n\nTicket: {{ ticket }}"
    msgs = [SYSTEM, {"role": "user", "content": template}]
    a = key(messages=msgs, context={"ticket": "My order never arrived"})
    b = key(messages=msgs, context={"ticket": "Refund my headphones"})
    assert a.text == "My order never arrived" and b.text == "Refund my headphones"
    assert a.scope == b.scope and a.exact_key != b.exact_key
    other_template = key(
        messages=[SYSTEM, {"role": "user", "content": "Summarize: {{ ticket }}"}],
        context={"ticket": "My order never arrived"},
    )
    assert other_template.scope != a.scope


def test_template_variable_used_elsewhere_stays_in_scope() -> None:
    msgs = [
        {"role": "system", "content": "You work for {{ company }}."},
        {"role": "user", "content": "{{ company }}: {{ ticket }}"},
    ]
    a = key(messages=msgs, context={"company": "Acme", "ticket": "Where is my order?"})
    b = key(messages=msgs, context={"company": "Globex", "ticket": "Where is my order?"})
    assert a.text == b.text == "Where is my order?"
    assert a.scope != b.scope


def test_requests_a_text_model_cannot_see_are_exact_only() -> None:
    image = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    assert key(messages=[{"role": "user", "content": image}]).text is None
    assert key(messages=[SYSTEM]).text is None  # no user turn
    assert key(messages=[{"role": "user", "content": "   "}]).text is None
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert key(messages=[{"role": "user", "content": parts}]).text == "a\nb"


def test_custom_text_function() -> None:
    keyed = key(text_fn=lambda messages, context: messages[-1]["content"].upper())
    assert keyed.text == "MY ORDER NEVER ARRIVED"
    assert key(text_fn=lambda m, c: None).text is None


def test_schema_is_computed_once_per_class() -> None:
    calls = []

    class Counted(BaseModel):
        x: int

        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            calls.append(1)
            return super().model_json_schema(*args, **kwargs)

    for _ in range(5):
        key(response_model=Counted)
    schema_fingerprint(Counted)
    assert len(calls) == 1


def test_schema_edit_changes_keys() -> None:
    class A(BaseModel):
        x: int

    class B(BaseModel):
        x: int = 0

    B.__name__ = "A"
    assert key(response_model=A).exact_key != key(response_model=B).exact_key


# -- properties -----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_property_key_order_never_matters(params: dict[str, Any]) -> None:
    reordered = dict(reversed(list(params.items())))
    assert canonical_json(params) == canonical_json(reordered)


@given(json_values, json_values)
def test_property_different_values_never_share_a_key(a: Any, b: Any) -> None:
    if _same(a, b):
        assert canonical_json(a) == canonical_json(b)
    else:
        assert canonical_json(a) != canonical_json(b)


def _same(a: Any, b: Any) -> bool:
    """Equality that also tells types apart (1 vs 1.0 vs True), as the keys must."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return repr(a) == repr(b)  # 0.0 and -0.0 are different requests
    return bool(a == b)
