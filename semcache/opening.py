"""Opening a cache: from ``SemanticCache``'s checked settings to a pipeline over an open store.

Apart from the facade because opening has its own failure policy, which the facade's methods never
meet again: a location that cannot be opened raises, or with ``fail_open=True`` leaves the cache
disabled over an empty private store (every call then reaches the provider and nothing is written
to the broken file); and a store opened for a pipeline that then cannot be built (a file written
with another embedder) is closed again before the error reaches the caller.
"""

from __future__ import annotations

import logging
from typing import Any

from semcache import lifecycle
from semcache.embedding.base import Embedder
from semcache.embedding.resolve import resolve_embedder
from semcache.errors import StoreError
from semcache.events import EventBus
from semcache.pipeline import Pipeline
from semcache.settings import Settings
from semcache.shadow import Shadow
from semcache.storage import Location, SQLiteStore, Store, open_location
from semcache.verifiers.base import Verifier

logger = logging.getLogger("semcache")

# ``verifier=``'s default, the built-in verifier (None is taken: it means no verification).
DEFAULT_VERIFIER: Any = object()


def open_pipeline(
    path: Location,
    settings: Settings,
    *,
    embedder: Embedder | str | Any | None,
    verifier: Verifier | None,
    shadow_rate: float,
    shadow_target: float | None,
    fail_open: bool,
    busy_timeout: float,
) -> Pipeline:
    """The pipeline of a cache at ``path``, its store open (``Pipeline.store``); ``embedder`` and
    ``verifier`` as ``SemanticCache`` takes them. Why the cache is disabled, if it is, is
    ``Pipeline.disabled``."""
    # Checked before the store opens; the default waits for the model (its gate is the model's).
    chosen = None if verifier is DEFAULT_VERIFIER else lifecycle.resolve_verifier(verifier)
    disabled: str | None = None  # why the cache is off (fail_open on a broken file)
    try:
        store: Store = open_location(path, busy_timeout=busy_timeout, search=settings.search)
    except StoreError as exc:
        if not fail_open:
            raise
        # The app asked to keep working against the provider: an empty private store stands
        # in, and every lookup is a miss; nothing is written to the broken file.
        logger.error("semcache: cache disabled, calling the provider for everything: %s", exc)
        disabled = str(exc)
        store = SQLiteStore(":memory:", busy_timeout=busy_timeout)
    try:
        # The default follows the file: a cache keeps the bundled model it was made with.
        embedder_ = resolve_embedder(embedder, recorded=store.settings().get("embedder_name"))
        store.check_settings({"embedder_name": embedder_.name})
        verifier_ = lifecycle.default_verifier_for(embedder_.name) if chosen is None else chosen
        return Pipeline(
            store, embedder_, verifier_, settings,
            shadow=Shadow(store, shadow_rate, shadow_target), events=EventBus(),
            disabled=disabled,
        )  # fmt: skip
    except BaseException:
        store.close()
        raise
