"""What every ``semcache`` command runs in: one-line errors, opening the cache, shared options.

A command body opens a cache, calls one library function and formats the result
(``semcache.cli.commands``); everything around that call is the same for all of them and lives
here, so a command reads as what it does. ``CommandGroup`` turns library errors
(``SemcacheError``) and environment errors (``OSError``) into one-line messages with exit code 1,
a URL's password replaced by ``***``; ``open_store`` opens an existing cache (a SQLite file or a
``postgresql://`` URL) with the time budget a maintenance statement needs; the embedder helpers
pick the model a cache was created with, so ``query`` and ``import`` never mix vectors of two
models. Nothing here imports torch or instructor.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from semcache.errors import CacheNotFoundError, SemcacheError
from semcache.ops.entry_filter import parse_duration
from semcache.storage import Rows, open_existing
from semcache.storage.location import is_postgres, redact

F = TypeVar("F", bound=Callable[..., Any])

# Seconds one statement of a command may run on PostgreSQL (a check or prune of a large cache
# reads every row); the connection itself still gives up after its 3 s connect timeout.
STATEMENT_BUDGET = 600.0


class _QuietOutages(logging.Filter):
    """The storage layer warns once per outage for long-running apps; a command reports a server
    it cannot reach as its one-line error instead of a second, differently worded warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("semcache: PostgreSQL at ")


class CommandGroup(click.Group):
    """Turns library and I/O errors into one-line ``click.ClickException``s (exit code 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        quiet = _QuietOutages()
        logger = logging.getLogger("semcache")
        logger.addFilter(quiet)
        try:
            return super().invoke(ctx)
        except (SemcacheError, OSError) as exc:
            # libpq may quote a connection string: no message leaves with its password.
            raise click.ClickException(redact(" ".join(str(exc).split()))) from exc
        finally:
            logger.removeFilter(quiet)


# -- shared options ----------------------------------------------------------------------------


class _Duration(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except SemcacheError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Duration()


def filter_options(func: F) -> F:
    """The entry filters shared by ``ls`` and ``prune`` (see ``semcache.ops.entry_filter``)."""
    options = [
        click.option("--scope", help="Scope hash or a prefix of it (ls shows 12 characters)."),
        click.option("--namespace", help="Only this namespace."),
        click.option("--schema", "schema_name", help="Only this response model (schema title)."),
        click.option("--model", help="Only this LLM model name."),
        click.option("--older-than", type=DURATION, help="Created longer ago than this (7d, 12h)."),
        click.option("--newer-than", type=DURATION, help="Created more recently than this."),
        click.option("--never-hit", is_flag=True, help="Never served as a hit."),
        click.option("--expired", is_flag=True, help="TTL passed (needs an expires_at column)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# -- opening caches ----------------------------------------------------------------------------


@contextlib.contextmanager
def open_store(db: str) -> Iterator[Rows]:
    """The store of an existing cache: a file (opening it creates the views for sqlite3/Datasette
    users) or a PostgreSQL schema holding one; never an empty new cache reporting zeros."""
    store = open_existing(db, busy_timeout=budget(db))
    try:
        yield store
    finally:
        store.close()


def budget(db: str) -> float:
    """How long a statement may run on PostgreSQL; on SQLite, how long to wait for a lock."""
    return STATEMENT_BUDGET if is_postgres(db) else 5.0


def recorded_embedder(db: str) -> str | None:
    """The embedding model DB was created with; None when DB holds no cache yet."""
    try:
        with open_store(db) as store:
            return store.settings().get("embedder_name")
    except CacheNotFoundError:
        return None


def manifest_embedder(folder: str) -> str | None:
    """The embedding model an export folder was written with, if its manifest says."""
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        name = json.loads((Path(folder) / "manifest.json").read_text())["embedder"]["name"]
        return name if isinstance(name, str) else None
    return None  # import_export reports what is wrong with the folder


def embedder_arg(name: str | None) -> Any:
    """The ``embedder=`` for a model name recorded in a cache or an export: a bundled model's
    name selects its offline copy instead of a download (``resolve.for_recorded``)."""
    from semcache.embedding.resolve import for_recorded

    return for_recorded(name)
