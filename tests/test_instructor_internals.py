"""Each instructor detail semcache relies on, checked against the installed instructor.

Everything semcache reads from instructor that instructor does not publish as API is named in
``semcache.integrations.instructor_internals``. When an instructor release moves one of them, the
test for it fails here with a message saying what moved and what it breaks, instead of the cache
quietly keying requests differently or serving what the live call would refuse.
"""

from __future__ import annotations

from typing import Any

import httpx
import instructor
import pytest
from pydantic import BaseModel

from semcache.integrations import instructor_internals as internals

WHERE = "semcache/integrations/instructor_internals.py"


class Answer(BaseModel):
    text: str


def test_the_async_validator_check_is_where_semcache_reads_it() -> None:
    check = internals.async_validator_check()
    assert check is not None, (
        f"instructor {instructor.__version__} has no {internals.ASYNC_VALIDATORS_MODULE}."
        f"{internals.ASYNC_VALIDATORS_FUNCTION}: a cache hit could succeed where the live call "
        f"refuses a model with async validators. Find where it moved and update {WHERE}."
    )
    check(Answer)  # takes the response model; one without async validators passes


def test_from_provider_keeps_its_default_model_in_the_create_closure() -> None:
    http = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    client: Any = instructor.from_provider(
        "openai/gpt-4o-mini", api_key="sk-test", base_url="http://fake/v1", http_client=http
    )
    if isinstance(getattr(client, "default_model", None), str):
        pytest.skip("instructor now publishes client.default_model; the closure is not read")
    code = getattr(client.create_fn, "__code__", None)
    assert code is not None and internals.DEFAULT_MODEL_FREEVAR in code.co_freevars, (
        f"instructor {instructor.__version__}'s from_provider create function has no free "
        f"variable {internals.DEFAULT_MODEL_FREEVAR!r}: calls that name no model would not be "
        f"cached (the model is part of the key). Find where the model is kept; update {WHERE}."
    )
    assert internals.closure_default_model(client.create_fn) == "gpt-4o-mini"


def test_async_clients_are_instructors_async_class() -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    from openai import AsyncOpenAI, OpenAI

    sync = instructor.from_openai(OpenAI(api_key="sk-test", base_url="http://fake/v1"))
    aio = instructor.from_openai(
        AsyncOpenAI(api_key="sk-test", base_url="http://fake/v1", http_client=http)
    )
    assert internals.is_async_client(aio) and not internals.is_async_client(sync), (
        f"instructor {instructor.__version__} no longer marks async clients with "
        f"instructor.AsyncInstructor: the wrapper would call an async client synchronously. "
        f"Update {WHERE}."
    )


def test_mode_and_provider_are_enums_with_string_values() -> None:
    """The scope of a request includes the client's mode and provider, as their string values."""
    from openai import OpenAI

    client: Any = instructor.from_openai(OpenAI(api_key="sk-test", base_url="http://fake/v1"))
    assert internals.enum_value(client.mode) == "tool_call", (
        f"instructor {instructor.__version__} changed Mode's values: every key built with the old "
        f"value misses (a silent cache flush). Update {WHERE} to map the new value to the old one."
    )
    assert internals.enum_value(client.provider) == "openai"


def test_partial_classes_name_their_model_and_parse_json_chunks() -> None:
    """Streamed hits are replayed through ``Partial[M].model_from_chunks``, and
    ``create(stream=True, response_model=Partial[M])`` is keyed by the M the class names."""
    assert internals.partial_base(instructor.Partial[Answer]) is Answer, (
        f"instructor {instructor.__version__}'s Partial[M] no longer names M as "
        f"{internals.PARTIAL_ORIGINAL_ATTR}: create(stream=True) with Partial[M] would pass "
        f"through uncached. Update {WHERE}."
    )
    assert internals.partial_base(Answer) is None
    parser = internals.partial_parser(Answer)
    parts = list(parser(iter(['{"te', 'xt": "hel', 'lo"}']), strict=True))
    assert [p.text for p in parts] == [None, "hel", "hello"], (
        f"instructor {instructor.__version__}'s {internals.PARTIAL_PARSER} no longer turns JSON "
        f"text chunks into partial objects: cached streams would not replay. Update {WHERE}."
    )
    assert parts[-1] == Answer(text="hello")


def test_iterable_models_hold_their_items_and_parse_json_chunks() -> None:
    """Iterable calls are keyed and stored as ``IterableModel(M)``; hits replay through its
    ``tasks_from_chunks``."""
    model = internals.iterable_model(Answer)
    assert internals.ITERABLE_FIELD in model.model_fields, (
        f"instructor {instructor.__version__}'s IterableModel has no field "
        f"{internals.ITERABLE_FIELD!r}: streamed lists could not be stored. Update {WHERE}."
    )
    assert internals.iterable_model(Answer) is model  # built once per model
    chunks = ['{"tasks": [{"text": "a"}, {"te', 'xt": "b"}]}']
    items = list(internals.iterable_parser(model)(iter(chunks), strict=True))
    assert items == [Answer(text="a"), Answer(text="b")], (
        f"instructor {instructor.__version__}'s {internals.ITERABLE_PARSER} no longer yields "
        f"each item of a JSON list: cached iterables would not replay. Update {WHERE}."
    )


def test_the_supported_versions_are_the_ones_pyproject_states() -> None:
    from importlib.metadata import requires

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    stated = [Requirement(r) for r in requires("semcache") or [] if r.startswith("instructor")]
    assert [r.specifier for r in stated] == [SpecifierSet(internals.SUPPORTED)]
    assert instructor.__version__ in SpecifierSet(internals.SUPPORTED)
