"""Work beside the lookups: which threshold applies, the live labels that move it, and the
periodic jobs (expiry, log retention, thresholds set by other processes, saving large indexes).

The pipeline looks requests up and stores answers. On that path it asks this module only for
dictionary operations (the threshold of a request, noting a near miss, queueing its label); the
rest runs in ``run()``, which the pipeline calls when its ledger is due, about once a second, and
in ``tune()``. Thresholds are persisted in the store and read back here, so a change made by any
process (``set_threshold``, ``semcache tune --apply``, another cache's ``auto_tune``) reaches
every cache on the file within a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from semcache import calibration, lifecycle
from semcache.labels import NearMisses
from semcache.requests import Plan
from semcache.scopes import Scopes
from semcache.storage.base import Store
from semcache.storage.ledger import Ledger
from semcache.verifiers.base import Verifier

logger = logging.getLogger("semcache")

_SAVE_AFTER = 50_000  # vectors added to a scope before maintenance saves its index again
# New labels between two calibrations when auto_tune is on: 50, or a twentieth of the labels the
# last one read, so that re-reading every label costs a bounded amount per new label.
TUNE_EVERY = 50


class Knobs(Protocol):
    """The settings upkeep reads (``semcache.settings.Settings`` has them)."""

    @property
    def audit(self) -> bool: ...

    @property
    def audit_retention(self) -> float: ...

    @property
    def audit_max_rows(self) -> int: ...

    @property
    def auto_tune(self) -> bool: ...

    @property
    def target_precision(self) -> float: ...


class Upkeep:
    """Thresholds, labels and periodic jobs of one pipeline. ``evicted(gone, reason)`` is how
    the pipeline drops expired entries from its index and reports them."""

    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        scopes: Scopes,
        settings: Knobs,
        evicted: Callable[[list[tuple[int, str]], str], None],
        *,
        threshold: float,
    ) -> None:
        self.store, self.ledger, self.scopes, self.settings = store, ledger, scopes, settings
        self.threshold = threshold  # the cache's own, when none is persisted
        self._evicted = evicted
        self.thresholds: dict[str, float] = store.thresholds()  # persisted, refreshed in run()
        self.near_misses = NearMisses()
        self._timers = lifecycle.Maintenance()
        self._new_labels = 0  # since the last calibration
        self._labels_read = 0  # by the last calibration
        self._schemas: dict[str, str] = {}  # scope -> schema name, for its persisted threshold

    # -- thresholds -----------------------------------------------------------------------------

    def threshold_for(self, plan: Plan) -> float:
        """The call's threshold, else the scope's, the response model's, the file's, the
        constructor's."""
        self._schemas[plan.keyed.scope] = plan.keyed.schema_name
        if plan.threshold is not None:
            return plan.threshold
        return self.scope_threshold(plan.keyed.scope)

    def scope_threshold(self, scope: str) -> float:
        """The threshold a lookup in ``scope`` applies, without a per-call override."""
        schema = self._schemas.get(scope)
        for target in (f"scope:{scope}", f"schema:{schema}" if schema else "", "default"):
            if target in self.thresholds:
                return self.thresholds[target]
        return self.threshold

    def refresh(self) -> None:
        self.thresholds = self.store.thresholds()

    # -- labels and calibration -----------------------------------------------------------------

    def labelled(self) -> None:
        """A label was written elsewhere (a shadow check): it counts toward the next calibration."""
        self._new_labels += 1

    def flush_labels(self, verifier: Verifier) -> None:
        """Hand the answered near misses to the ledger, judged by ``verifier`` and compared."""
        rows = self.near_misses.drain(verifier)
        for row in rows:
            self.ledger.row("near_misses", row)
        self._new_labels += len(rows)

    def tune(self, *, apply: bool, source: str) -> list[calibration.Calibration]:
        """Calibrate every scope on the labels written so far (``semcache.calibration``); with
        ``apply``, persist the new thresholds, each logged with its evidence."""
        self._new_labels = 0
        decisions = calibration.calibrate_all(
            self.store, self.scope_threshold, self.settings.target_precision,
            apply=apply, source=source,
        )  # fmt: skip
        self._labels_read = sum(d.labels + d.vetoed for d in decisions)
        if apply:
            self.refresh()
        return decisions

    # -- periodic jobs --------------------------------------------------------------------------

    def run(self) -> None:
        """Reclaim expired entries, apply the logs' retention, pick up thresholds another process
        set, recalibrate (``auto_tune``), save large indexes; each when due. A failure postpones
        the rest to the next run (the bookkeeping was written first, by the pipeline)."""
        try:
            if self._timers.due("expire"):
                self._evicted(self.store.evict_expired(time.time()), "ttl")
            if self._timers.due("audit"):
                self._trim_logs()
            self.refresh()
            enough = max(TUNE_EVERY, self._labels_read // 20)
            if self.settings.auto_tune and (self._new_labels >= enough or self._timers.due("tune")):
                self.tune(apply=True, source="auto")
            if self._timers.due("save_index"):
                self.scopes.save(min_unsaved=_SAVE_AFTER, publish=True)
        except Exception as exc:
            logger.debug("semcache: maintenance postponed: %s", exc)

    def _trim_logs(self) -> None:
        """The audit log's retention, which near-miss labels share."""
        for table, on in (("audit", self.settings.audit), ("near_misses", True)):
            if on:
                self.store.trim_log(
                    table,
                    older_than=time.time() - self.settings.audit_retention,
                    max_rows=self.settings.audit_max_rows,
                )
