"""Every place semcache reads something instructor does not publish as API, in one module.

Each function here depends on a detail of instructor's implementation, names the detail, and has a
test in ``tests/test_instructor_internals.py`` that fails with a clear message when an instructor
release moves it. Supported instructor versions: ``SUPPORTED`` (also stated in pyproject.toml).
"""

from __future__ import annotations

from typing import Any

SUPPORTED = ">=1.17,<2"

# Where instructor keeps its check that refuses response models with async validators.
ASYNC_VALIDATORS_MODULE = "instructor.v2.validation.async_validators"
ASYNC_VALIDATORS_FUNCTION = "reject_async_validators"
# The free variable of a ``from_provider`` client's patched create function holding its model.
DEFAULT_MODEL_FREEVAR = "default_model"


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
