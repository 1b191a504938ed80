"""The exceptions semcache raises.

One base, ``SemcacheError``, so callers can catch everything from the cache in one place; every
subclass also inherits the built-in it naturally is, so code that already catches ``ValueError`` or
``TimeoutError`` keeps working.
"""

from __future__ import annotations


class SemcacheError(Exception):
    """Base class of every error raised by semcache."""


class ConfigMismatchError(SemcacheError, ValueError):
    """The cache file was created with settings (embedder, format) that differ from the ones given.

    Raised instead of silently mixing vectors from two embedding models in one index.
    """


class UncacheableRequestError(SemcacheError, TypeError):
    """A request cannot be serialized unambiguously, so it must not get a cache key."""


class StoreError(SemcacheError, RuntimeError):
    """The store cannot be opened or read (damaged file, not a database, I/O error, SQL error)."""


class CacheNotFoundError(StoreError, FileNotFoundError):
    """No cache where one was expected: a missing file, or a database schema without semcache's
    tables (maintenance opens existing caches only, never creates an empty one)."""


class LockTimeoutError(StoreError, TimeoutError):
    """Another writer held the database lock for longer than the configured wait."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The database server cannot be reached, or did not answer within its time budget.

    The store logs an outage once when it starts and once when it ends; the pipeline treats this
    error as a miss (or a dropped write) without logging each call again.
    """


class EmbedderError(SemcacheError, RuntimeError):
    """The embedding model could not be loaded or produced unusable vectors."""


class UsageError(SemcacheError, ValueError):
    """An argument is out of range or of the wrong kind (a threshold outside [-1, 1], say)."""


class ExportError(SemcacheError, ValueError):
    """A folder is not a complete, intact semcache export that this version can read."""


class EntryNotFoundError(SemcacheError, LookupError):
    """No entry has the given id."""


class ArgumentTypeError(UsageError, TypeError):
    """An argument is of a kind semcache cannot use (an embedder that is not one, say).

    Also a ``TypeError``, which is what these mistakes raised before ``UsageError`` covered them.
    """
