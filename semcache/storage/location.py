"""Where a cache lives: a file path, ``":memory:"``, or a URL naming a storage engine.

A string with a URL scheme (``postgresql://...``) is never taken for a file name: before this check,
``SemanticCache("postgresql://host/db")`` created the folders ``postgresql:/host/`` and a SQLite
file inside them. ``sqlite:///relative.db`` and ``sqlite:////absolute.db`` (SQLAlchemy's spelling)
name a SQLite file; any other scheme is a ``UsageError`` naming the supported ones.
"""

from __future__ import annotations

import os
import re

from semcache.errors import UsageError

SCHEMES = ("sqlite",)  # URL schemes a cache location may use; a plain path is a SQLite file
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def sqlite_target(location: str | os.PathLike[str]) -> str:
    """The SQLite file (or ``":memory:"``) that ``location`` names; UsageError for another URL."""
    text = os.fspath(location)
    if isinstance(text, bytes):
        raise UsageError("a cache location is a str or os.PathLike[str], not bytes")
    match = _URL.match(text)
    if match is None:
        return text
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        rest = text[match.end() :]
        # sqlite:///cache.db is relative, sqlite:////srv/cache.db absolute, sqlite:// in memory.
        if rest == "":
            return ":memory:"
        if not rest.startswith("/") or rest == "/":
            raise UsageError(f"{text!r}: a SQLite URL is sqlite:///relative/path or sqlite:////abs")
        return rest[1:]
    raise UsageError(
        f"{text!r} is a {scheme}:// URL, which semcache cannot store in; supported: a file path, "
        f"':memory:', or a URL with scheme {', '.join(s + '://' for s in SCHEMES)}"
    )
