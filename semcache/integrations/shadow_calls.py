"""Shadow checks' provider calls: a served semantic hit re-asked of the provider in the background.

With ``SemanticCache(shadow_rate=...)`` the wrappers in ``semcache.integrations.instructor`` hand a
sampled semantic hit here; the caller already has the cached answer. The fresh answer goes to
``Pipeline.record_shadow``, which compares the two (``semcache.shadow``). A sync client's calls run
on a small thread pool, an async client's as tasks on the caller's event loop; ``drain`` and
``adrain`` wait for them. A failed shadow call is logged at debug level and never reaches the app.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from semcache.pipeline import Pipeline
from semcache.requests import Plan
from semcache.types import CacheHit

logger = logging.getLogger("semcache")


class ShadowCalls:
    """The background provider calls of one wrapped client's shadow checks."""

    def __init__(self, pipeline: Pipeline, client: Any) -> None:
        self.pipeline = pipeline
        self.client = client
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self, hit: CacheHit, messages: Any, plan: Plan, max_retries: Any, kwargs: dict[str, Any]
    ) -> None:
        """Re-ask a sync client for ``hit`` on a worker thread."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="semcache-shadow")
            pool = self._pool
        pool.submit(self._ask, hit, messages, plan, max_retries, dict(kwargs))

    def spawn(
        self, hit: CacheHit, messages: Any, plan: Plan, max_retries: Any, kwargs: dict[str, Any]
    ) -> None:
        """Re-ask an async client for ``hit`` in a task on the running event loop."""
        task = asyncio.create_task(self._aask(hit, messages, plan, max_retries, dict(kwargs)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ask(
        self, hit: CacheHit, messages: Any, plan: Plan, max_retries: Any, kwargs: dict[str, Any]
    ) -> None:
        """Re-ask the provider for a served semantic hit and record whether the answers agree."""
        try:
            fresh = self.client.create(
                messages=messages, response_model=plan.response_model, max_retries=max_retries,
                context=plan.context, strict=plan.strict, **kwargs,
            )  # fmt: skip
            self.pipeline.record_shadow(hit, fresh)
        except Exception as exc:  # a shadow call must never surface to the app
            logger.debug("semcache: shadow verification failed: %s", exc)

    async def _aask(
        self, hit: CacheHit, messages: Any, plan: Plan, max_retries: Any, kwargs: dict[str, Any]
    ) -> None:
        try:
            fresh = await self.client.create(
                messages=messages, response_model=plan.response_model, max_retries=max_retries,
                context=plan.context, strict=plan.strict, **kwargs,
            )  # fmt: skip
            await asyncio.to_thread(self.pipeline.record_shadow, hit, fresh)
        except Exception as exc:
            logger.debug("semcache: shadow verification failed: %s", exc)

    def drain(self, timeout: float | None = None) -> None:
        """Wait for background shadow calls of a sync client."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=timeout is None or timeout > 0)

    async def adrain(self) -> None:
        """Wait for background shadow tasks started on this event loop."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
