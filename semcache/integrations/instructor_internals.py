"""Every place semcache reads something instructor does not publish as API, in one module.

Each function here depends on a detail of instructor's implementation, names the detail, and has a
test in ``tests/test_instructor_internals.py`` that fails with a clear message when an instructor
release moves it. Supported instructor versions: ``SUPPORTED`` (also stated in pyproject.toml).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

SUPPORTED = ">=1.17,<2"

# Where instructor keeps its check that refuses response models with async validators.
ASYNC_VALIDATORS_MODULE = "instructor.v2.validation.async_validators"
ASYNC_VALIDATORS_FUNCTION = "reject_async_validators"
# The free variable of a ``from_provider`` client's patched create function holding its model.
DEFAULT_MODEL_FREEVAR = "default_model"
# The attribute of a ``Partial[M]`` class that names M.
PARTIAL_ORIGINAL_ATTR = "_original_model"
# The classmethods instructor's own stream parsers call to turn JSON text chunks into objects:
# ``Partial[M].model_from_chunks`` (partial objects) and ``IterableModel(M).tasks_from_chunks``
# (each item as its JSON object closes).
PARTIAL_PARSER = "model_from_chunks"
ITERABLE_PARSER = "tasks_from_chunks"
# The field of ``IterableModel(M)`` holding the list of M.
ITERABLE_FIELD = "tasks"


def async_validator_check() -> Any | None:
    """instructor's ``reject_async_validators(response_model)``, or None when this instructor
    has no such check (then a cache hit cannot be stricter than the live call)."""
    import importlib

    try:
        module = importlib.import_module(ASYNC_VALIDATORS_MODULE)
    except ImportError:
        return None
    return getattr(module, ASYNC_VALIDATORS_FUNCTION, None)


def closure_default_model(create_fn: Any) -> str | None:
    """The model a ``from_provider("openai/gpt-4o")`` client injects when a call names none.

    instructor keeps it in the closure of its patched create function rather than on the client,
    so it is read from the function's free variables (``__code__.co_freevars``).
    """
    code, closure = getattr(create_fn, "__code__", None), getattr(create_fn, "__closure__", None)
    if code is None or not closure:
        return None
    for name, cell in zip(code.co_freevars, closure, strict=False):
        if name == DEFAULT_MODEL_FREEVAR:
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                return None
            return value if isinstance(value, str) else None
    return None


def is_async_client(client: Any) -> bool:
    """Whether ``client`` is instructor's ``AsyncInstructor`` (its methods return awaitables)."""
    import instructor

    return isinstance(client, instructor.AsyncInstructor)


def enum_value(item: Any) -> str:
    """An enum's value (instructor's ``Mode`` and ``Provider``), or the string form of anything."""
    return str(getattr(item, "value", item))


def partial_base(response_model: Any) -> type[BaseModel] | None:
    """M for a ``Partial[M]`` class (``create(stream=True, response_model=Partial[M])``), else
    None. instructor records M on the class it builds, as ``_original_model``."""
    from instructor.dsl.partial import PartialBase

    if not (isinstance(response_model, type) and issubclass(response_model, PartialBase)):
        return None
    base = getattr(response_model, PARTIAL_ORIGINAL_ATTR, None)
    return base if isinstance(base, type) and issubclass(base, BaseModel) else None


# Partial[M] and IterableModel(M) build a new class on every call (milliseconds for a nested
# model); a replayed stream must not pay that, so they are built once per model. Bounded: a class
# kept here keeps M alive.
@functools.lru_cache(maxsize=512)
def partial_parser(base: type[BaseModel]) -> Callable[..., Iterator[Any]]:
    """``Partial[base].model_from_chunks``: JSON text chunks in, partial objects of ``base`` out
    (keyword arguments ``context`` and ``strict`` as instructor passes them)."""
    from instructor import Partial

    parser: Callable[..., Iterator[Any]] = getattr(Partial[base], PARTIAL_PARSER)  # type: ignore[valid-type]
    return parser


@functools.lru_cache(maxsize=512)
def iterable_model(base: type[BaseModel]) -> type[BaseModel]:
    """``IterableModel(base)``: what instructor asks the provider for in an iterable call, a
    model with one field (``ITERABLE_FIELD``) holding the list of ``base``."""
    from instructor import IterableModel

    return IterableModel(base)


def iterable_parser(model: type[BaseModel]) -> Callable[..., Iterator[Any]]:
    """``IterableModel(M).tasks_from_chunks``: JSON text chunks of ``{"tasks": [...]}`` in, each
    item (an M) out as soon as its object closes."""
    parser: Callable[..., Iterator[Any]] = getattr(model, ITERABLE_PARSER)
    return parser
