"""Where a cache lives: a file path, ``":memory:"``, a URL naming a storage engine, or the
application's ``psycopg_pool.ConnectionPool`` (a PostgreSQL cache borrowing its connections).

A string with a URL scheme (``postgresql://...``) is never taken for a file name: before this check,
``SemanticCache("postgresql://host/db")`` created the folders ``postgresql:/host/`` and a SQLite
file inside them. ``sqlite:///relative.db`` and ``sqlite:////absolute.db`` (SQLAlchemy's spelling)
name a SQLite file; ``postgresql://`` and ``postgres://`` name a PostgreSQL database (libpq's URL);
any other scheme is a ``UsageError`` naming the supported ones.

A PostgreSQL URL may carry a password, so every message here shows the location through
``redact``: the password never reaches an exception, a log line or CLI output.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Union

from semcache.errors import UsageError

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

# What SemanticCache, instructor's cache= adapter and open_location take.
Location = Union[str, os.PathLike[str], "ConnectionPool[Any]"]

POSTGRES_SCHEMES = ("postgresql", "postgres")
SCHEMES = ("sqlite", *POSTGRES_SCHEMES)  # URL schemes a cache location may use
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# user:password@ in a URL's authority, and password=... in a query string or keyword DSN.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^/@:?#]*):[^/@?#]*@")
_KEY_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` (a location or a message quoting one) with any password replaced by ``***``."""
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", text))


def scheme(location: str | os.PathLike[str]) -> str | None:
    """The URL scheme of ``location`` in lower case, or None for a plain path."""
    text = _text(location)
    match = _URL.match(text)
    return None if match is None else match.group(1).lower()


def is_postgres(location: object) -> bool:
    """Whether ``location`` is a ``postgresql://`` or ``postgres://`` URL."""
    return isinstance(location, (str, os.PathLike)) and scheme(location) in POSTGRES_SCHEMES


def is_pool(location: object) -> bool:
    """Whether ``location`` is a psycopg pool, sync or async (the store refuses an async one
    with a message saying what to pass). psycopg_pool is imported only for an object that is
    not a path, so a file cache never imports it."""
    if isinstance(location, (str, bytes, os.PathLike)):
        return False
    try:
        from psycopg_pool import AsyncConnectionPool, ConnectionPool
    except ImportError:
        return False
    return isinstance(location, (ConnectionPool, AsyncConnectionPool))


def sqlite_target(location: str | os.PathLike[str]) -> str:
    """The SQLite file (or ``":memory:"``) that ``location`` names; UsageError for another URL."""
    text = _text(location)
    match = _URL.match(text)
    if match is None:
        return text
    kind = match.group(1).lower()
    if kind == "sqlite":
        rest = text[match.end() :]
        # sqlite:///cache.db is relative, sqlite:////srv/cache.db absolute, sqlite:// in memory.
        if rest == "":
            return ":memory:"
        if not rest.startswith("/") or rest == "/":
            raise UsageError(f"{text!r}: a SQLite URL is sqlite:///relative/path or sqlite:////abs")
        return rest[1:]
    if kind in POSTGRES_SCHEMES:
        raise UsageError(
            f"{redact(text)!r} is a {kind}:// URL: SemanticCache stores in PostgreSQL, but this "
            "needs a SQLite cache: a file path, ':memory:', or a sqlite:// URL"
        )
    raise UsageError(
        f"{redact(text)!r} is a {kind}:// URL, which semcache cannot store in; supported: a file "
        f"path, ':memory:', or a URL with scheme {', '.join(s + '://' for s in SCHEMES)}"
    )


def _text(location: str | os.PathLike[str]) -> str:
    text = os.fspath(location)
    if isinstance(text, bytes):
        raise UsageError("a cache location is a str or os.PathLike[str], not bytes")
    return text
