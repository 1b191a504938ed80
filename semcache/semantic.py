"""The semantic tier's decision: which of a lookup's proposed candidates, if any, answers it.

The pipeline (``semcache.pipeline``) keys a request, tries the exact tier, embeds the request's
text and has the nearest entries of its scope proposed (by the FAISS index in this process or by
the database). Whether one of them is served is decided here, apart from that wiring, because it
is the part a wrong answer could only come from: it is read, and tested, on its own.

Each candidate's similarity is recomputed from the float32 vector in storage, and that number alone
decides a hit (``similarity >= threshold``) and is what ``CacheHit.similarity`` reports. A
candidate must also pass feedback (no hit marked wrong for a near-duplicate query) and the
verifier, no candidate about as near may hold another answer (``semcache.verifiers.agreement``),
and its stored JSON must still validate against the *current* response_model; anything else is a
miss. Each refusal is recorded (the vetoes table, the audit log, a ``VetoEvent``), and a miss whose
nearest candidate lay just below the threshold leaves a near miss to label (``semcache.labels``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from semcache.events import EventBus, VetoEvent
from semcache.labels import NearMisses, nearest
from semcache.requests import Plan, rehydrate, stored_similarity
from semcache.scopes import Scopes
from semcache.settings import Settings
from semcache.storage.base import Store
from semcache.storage.ledger import Ledger
from semcache.types import CacheHit, StoredEntry
from semcache.verifiers.agreement import find_rival
from semcache.verifiers.base import Verdict, Verifier
from semcache.verifiers.schema_terms import judge

# A query this close to one a hit was marked wrong for is treated as the same query.
FEEDBACK_RADIUS = 0.95


class SemanticTier:
    """Chooses among a lookup's candidates over one store, one verifier and the derived index."""

    def __init__(
        self,
        store: Store,
        verifier: Verifier,
        settings: Settings,
        *,
        ledger: Ledger,
        scopes: Scopes,
        near_misses: NearMisses,
        events: EventBus,
    ) -> None:
        self.store = store
        self.verifier = verifier
        self.settings = settings
        self.ledger = ledger
        self.scopes = scopes  # told about candidates that are gone from the store
        self.near_misses = near_misses
        self.events = events

    def choose(
        self,
        plan: Plan,
        vector: np.ndarray,
        threshold: float,
        found: list[tuple[int, float]],
        now: float,
        start: float,
    ) -> CacheHit | None:
        """The hit among ``found`` (``(entry id, similarity)`` as proposed, best first) for
        ``plan``, whose text embeds as ``vector``; None for a miss. ``start`` is when the
        lookup began to embed, for the audit log's latency."""
        keyed = plan.keyed
        rows, wrong_for = self.store.candidates([i for i, _ in found], now, len(vector))
        gone = [i for i, _ in found if i not in rows]
        if gone:  # deleted, expired or replaced elsewhere
            self.scopes.forget(keyed.scope, gone)
        verdict: Verdict | None = None
        # The similarity that decides is recomputed from the store's own vector: the index only
        # proposes candidates, so even a damaged index cannot make a wrong hit. Candidates are
        # tried best first by that similarity (a compressed index may order them slightly off).
        scored = sorted(
            (
                (stored_similarity(row.embedding, vector), row)
                for row in (rows.get(entry_id) for entry_id, _ in found)
                if row is not None and row.scope == keyed.scope and row.prompt is not None
            ),
            key=lambda pair: -pair[0],
        )
        eligible = [(similarity, row) for similarity, row in scored if similarity >= threshold]
        judged: dict[int, Verdict] = {}
        refused: dict[int, str] = {}  # candidate -> the check that refused it

        def verdict_of(similarity: float, row: StoredEntry) -> Verdict:
            if row.id not in judged:
                judged[row.id] = self._judge(plan, row, similarity, vector, wrong_for.get(row.id))
            return judged[row.id]

        for similarity, row in eligible:
            verdict = verdict_of(similarity, row)
            if not verdict.accept:
                self._veto(plan, row, similarity, verdict, start)
                refused[row.id] = verdict.stage or self.verifier.name
                continue
            rival = find_rival(
                similarity, row, eligible, verdict_of, self.settings.agreement_margin
            )
            if rival is not None:
                # A candidate about as near as this one holds another answer: the query sits
                # between them and none is served (semcache.verifiers.agreement).
                reason = f"a candidate at similarity {rival:.4f} holds another answer"
                verdict = self._veto(
                    plan, row, similarity, Verdict(False, reason, "agreement"), start
                )
                refused[row.id] = "agreement"
                break
            hit = rehydrate(plan, row, min(similarity, 1.0), "semantic")
            if hit is not None:
                self._audit(plan, start, row, similarity, "hit", "")
                return hit
        if verdict is None:
            best = scored[0][0] if scored else (found[0][1] if found else None)
            self._audit(plan, start, None, best, "below_threshold", "")
        band = self.settings.near_miss_band
        if band is not None and plan.write:
            model = plan.response_model if self.settings.schema_evidence else None
            near = nearest(
                scored, threshold, band, refused, keyed.text or "", model,
                self.settings.agreement_margin,
            )  # fmt: skip
            if near is not None:
                self.near_misses.note(keyed.exact_key, near)
        return None

    def _judge(
        self,
        plan: Plan,
        row: StoredEntry,
        similarity: float,
        vector: np.ndarray,
        wrong_for: np.ndarray | None,
    ) -> Verdict:
        """Feedback first (a hit marked wrong for a near-duplicate query), then the verifier;
        nothing is recorded here (a rival is judged without being tried)."""
        query = plan.keyed.text or ""
        assert row.prompt is not None
        if wrong_for is not None and float((wrong_for @ vector).max()) >= FEEDBACK_RADIUS:
            return Verdict(False, "marked wrong for a near-duplicate query", "feedback")
        model = plan.response_model if self.settings.schema_evidence else None
        return judge(self.verifier, query, row.prompt, similarity, model)

    def _veto(
        self, plan: Plan, row: StoredEntry, similarity: float, verdict: Verdict, start: float
    ) -> Verdict:
        """Record a veto: the vetoes table, the audit log and a ``VetoEvent``."""
        query = plan.keyed.text or ""
        assert row.prompt is not None
        stage = verdict.stage or self.verifier.name
        scope = plan.keyed.scope
        self.ledger.row("vetoes", (
            time.time(), scope, row.id, query, row.prompt, similarity, stage, verdict.reason,
        ))  # fmt: skip
        self._audit(plan, start, row, similarity, "veto", f"{stage}: {verdict.reason}")
        if self.events.active:
            self._emit(VetoEvent(
                plan.keyed.namespace, scope, row.id, query, row.prompt, similarity, stage,
                verdict.reason,
            ))  # fmt: skip
        return verdict

    def _audit(
        self,
        plan: Plan,
        start: float,
        row: StoredEntry | None,
        similarity: float | None,
        verdict: str,
        reason: str,
    ) -> None:
        if not self.settings.audit:
            return
        latency_ms = (time.perf_counter() - start) * 1000.0
        keyed = plan.keyed
        self.ledger.row("audit", (
            time.time(), keyed.namespace, keyed.scope, keyed.text, row.id if row else None,
            row.prompt if row else None, similarity, verdict, reason, latency_ms,
        ))  # fmt: skip

    def _emit(self, event: Any) -> None:
        self.events.emit(event)
