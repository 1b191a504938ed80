"""semcache: a semantic-similarity response cache for instructor.

    from semcache import SemanticCache
    cache = SemanticCache("cache.db", threshold=0.9)
    client = cache.wrap(instructor.from_openai(OpenAI()))

Importing semcache never imports torch or FAISS: they load on the first semantic lookup.
"""

from semcache.cache import DEFAULT_THRESHOLD, SemanticCache
from semcache.embedding import Embedder, SentenceTransformerEmbedder
from semcache.errors import (
    CacheNotFoundError,
    ConfigMismatchError,
    EmbedderError,
    EntryNotFoundError,
    ExportError,
    LockTimeoutError,
    SemcacheError,
    StoreError,
    StoreUnavailableError,
    UncacheableRequestError,
    UsageError,
)
from semcache.requests import cache_hit
from semcache.types import CacheHit, CacheStats

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_THRESHOLD",
    "CacheHit",
    "CacheNotFoundError",
    "CacheStats",
    "ConfigMismatchError",
    "Embedder",
    "EmbedderError",
    "EntryNotFoundError",
    "ExportError",
    "LockTimeoutError",
    "SemanticCache",
    "SemcacheError",
    "SentenceTransformerEmbedder",
    "StoreError",
    "StoreUnavailableError",
    "UncacheableRequestError",
    "UsageError",
    "cache_hit",
]
