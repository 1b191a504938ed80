"""Run the ticket-extraction stream through semcache and report what the cache did.

    python demo/run.py [--db PATH] [--limit N] [--latency SECONDS] [--threshold X] [--keep]
    python demo/run.py --store postgresql://user@host/db --workers 2

``--store`` (or ``--db``) is a cache file or a PostgreSQL URL; ``--workers N`` sends the stream
through N processes sharing that cache, as app servers of a fleet would (``demo/fleet.py``).

Without OPENAI_API_KEY the requests go to the local stub provider (offline, answers from the data
file, simulated latency). With it they go to the real OpenAI API; the data file's answers are
still what "right" means, so the report also counts provider answers that disagree with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

# The bundled embedding model is on disk; never let a library reach for the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __package__ in (None, ""):
    # `python demo/run.py` puts demo/ on sys.path, not the repo root that holds demo/ and semcache/.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import instructor
import openai
from instructor.core import InstructorError
from openai import OpenAI
from tqdm import tqdm

from demo.app import (
    DATA_PATH,
    MODEL,
    REPO_ROOT,
    SYSTEM_PROMPT,
    Ticket,
    TicketRequest,
    answers_by_text,
    load_stream,
)
from demo.report import DemoReport, Outcome, format_report, summarize
from demo.stub_provider import StubProvider
from semcache import SemanticCache, cache_hit
from semcache.storage import open_location
from semcache.storage.location import is_postgres, redact

DEFAULT_DB = REPO_ROOT / ".semcache-demo" / "demo.db"
DEFAULT_LATENCY_S = 0.35


@contextmanager
def provider(
    answers: dict[str, dict[str, Any]], latency_s: float, use_openai: bool
) -> Iterator[tuple[OpenAI, StubProvider | None]]:
    """An OpenAI client for the real API, or one pointed at a stub server that lives as long."""
    if use_openai:
        client = OpenAI()
        with client:
            yield client, None
        return
    with StubProvider(answers, latency_s=latency_s) as stub:
        client = OpenAI(base_url=stub.base_url, api_key="stub", max_retries=0)
        with client:
            yield client, stub


def ask(client: Any, request: TicketRequest) -> Outcome:
    """Send one request through the cached client and record where its answer came from."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": request.text},
    ]
    started = time.perf_counter()
    try:
        ticket, completion = client.create_with_completion(
            model=MODEL, response_model=Ticket, messages=messages, max_retries=1
        )
    except (InstructorError, openai.OpenAIError) as exc:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return Outcome(request.id, request.kind, request.text, "error", elapsed_ms,
                       request.answer, None, error=str(exc)[:300])  # fmt: skip
    elapsed_ms = (time.perf_counter() - started) * 1000
    hit = cache_hit(ticket)
    usage = getattr(completion, "usage", None)
    tokens = int(getattr(usage, "total_tokens", 0) or 0)
    return Outcome(
        id=request.id,
        kind=request.kind,
        text=request.text,
        tier="provider" if hit is None else hit.tier,
        latency_ms=elapsed_ms,
        expected=request.answer,
        got=ticket.model_dump(mode="json"),
        tokens=tokens,
        similarity=None if hit is None else hit.similarity,
        matched_prompt=None if hit is None else hit.matched_prompt,
    )


def _warm_up(cache: SemanticCache) -> None:
    """Load the embedding model before timing starts, so request 1 is not charged ~6 s for it."""
    embedder = getattr(cache, "embedder", None)
    if embedder is not None and hasattr(embedder, "embed"):
        embedder.embed(["warm-up"])


def run_demo(
    db_path: Path | str = DEFAULT_DB,
    *,
    limit: int | None = None,
    latency_s: float = DEFAULT_LATENCY_S,
    threshold: float | None = None,
    fresh: bool = True,
    progress: bool = True,
    data_path: Path = DATA_PATH,
    workers: int = 1,
    report_path: Path | None = None,
) -> DemoReport:
    """Run the stream (or its first ``limit`` requests) and return the report.

    ``db_path`` is a cache file or a ``postgresql://`` URL; ``workers`` > 1 runs the stream
    through that many processes sharing the cache. Also writes the report as JSON (next to a
    cache file, or to ``.semcache-demo/report.json`` for a database; ``report_path`` overrides),
    for tests and for comparing runs. ``threshold=None`` is the cache's default: its embedding
    model's.
    """
    requests = load_stream(data_path)[:limit]
    use_openai = bool(os.environ.get("OPENAI_API_KEY"))
    if is_postgres(db_path):
        store: Path | str = str(db_path)
        _require_empty(store, fresh)
        report_path = report_path or DEFAULT_DB.parent / "report.json"
    else:
        db_path = store = Path(db_path)
        if fresh and db_path.parent.exists():
            # The database and its SQLite side files (-wal, -shm); nothing else in the folder.
            for stale in db_path.parent.glob(db_path.name + "*"):
                stale.unlink()
        db_path.parent.mkdir(parents=True, exist_ok=True)
        report_path = report_path or db_path.parent / "report.json"

    outcomes: list[Outcome] = []
    if workers > 1:
        from demo.fleet import run_workers

        with provider(answers_by_text(requests), latency_s, use_openai) as (_, stub):
            outcomes, wall_time_s = run_workers(
                str(store), requests, workers, threshold=threshold, data_path=data_path,
                base_url=None if stub is None else stub.base_url,
            )  # fmt: skip
        with SemanticCache(store, threshold=threshold) as totals:  # no model loads for this
            stats = totals.stats()
            served_at = totals.threshold
    else:
        cache = SemanticCache(store, threshold=threshold)
        try:
            _warm_up(cache)
            with provider(answers_by_text(requests), latency_s, use_openai) as (
                openai_client,
                stub,
            ):
                client = cache.wrap(instructor.from_openai(openai_client))
                started = time.perf_counter()
                bar = tqdm(requests, desc="tickets", unit="req", disable=not progress, leave=False)
                with bar if progress else nullcontext(bar):
                    for request in bar:
                        outcomes.append(ask(client, request))
                        bar.set_postfix(_postfix(outcomes), refresh=False)
                wall_time_s = time.perf_counter() - started
            stats = cache.stats()
            served_at = cache.threshold
        finally:
            cache.close()

    report = summarize(
        outcomes,
        mode="openai" if use_openai else "stub",
        model=MODEL,
        threshold=served_at,
        wall_time_s=wall_time_s,
        server_calls=None if stub is None else stub.calls,
        cache_stats=dataclasses.asdict(stats),
    )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return report


def _require_empty(dsn: str, fresh: bool) -> None:
    """A fresh run on a database needs an empty cache: the demo never deletes rows there."""
    store = open_location(dsn)
    try:
        held = store.count()
    finally:
        store.close()
    if fresh and held:
        raise ValueError(
            f"{redact(dsn)} already holds a cache of {held} entries: point --store at an empty "
            "schema (?options=-csearch_path%3D<schema>), or pass --keep to add to it"
        )


def _postfix(outcomes: list[Outcome]) -> dict[str, int]:
    hits = sum(o.is_hit for o in outcomes)
    wrong = sum(o.is_hit and bool(o.wrong_fields) for o in outcomes)
    return {"hits": hits, "misses": len(outcomes) - hits, "wrong": wrong}


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the demo, print the report."""
    parser = argparse.ArgumentParser(description="semcache demo: support-ticket extraction")
    parser.add_argument(
        "--db",
        "--store",
        dest="db",
        default=str(DEFAULT_DB),
        help="cache file (SQLite), or a postgresql:// URL",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the cache, as the app servers of a fleet (default 1)",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N requests")
    parser.add_argument(
        "--latency",
        type=float,
        default=DEFAULT_LATENCY_S,
        help="stub provider latency in seconds (ignored with OPENAI_API_KEY)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="cosine similarity needed for a semantic hit (default: the embedding model's)",
    )
    fresh = parser.add_mutually_exclusive_group()
    fresh.add_argument(
        "--fresh",
        dest="fresh",
        action="store_true",
        default=True,
        help="start from an empty cache (default)",
    )
    fresh.add_argument(
        "--keep",
        dest="fresh",
        action="store_false",
        help="reuse the cache file from an earlier run",
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        report = run_demo(args.db, limit=args.limit, latency_s=args.latency,
                          threshold=args.threshold, fresh=args.fresh,
                          workers=args.workers)  # fmt: skip
    except ValueError as exc:
        parser.error(str(exc))
    print(format_report(report))
    if args.workers > 1:
        print(f"\n{args.workers} worker processes shared the cache at {redact(args.db)}")
    folder = DEFAULT_DB.parent if is_postgres(args.db) else Path(args.db).parent
    print(f"\nreport written to {folder / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
