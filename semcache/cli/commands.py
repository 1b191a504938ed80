"""The ``semcache`` command line: thin click commands over ``semcache.ops``.

``admin`` (stats, ls, show, query, prune, vacuum), ``check``, ``audit_log`` (log), ``export``,
``importer``, ``tuning`` and ``traffic`` (tune); ``semcache.cli.output`` prints what they return.

Each command opens the cache (a SQLite file, or a ``postgresql://`` URL: every command works on
both), calls one library function and formats what it returns, so everything the CLI does is also
a function call away. Library errors (``SemcacheError``) and environment errors (``OSError``)
become one-line messages with exit code 1, a URL's password replaced by ``***``; a traceback means
a bug. Only ``query``, and ``import`` when it must re-embed, load the embedding model: the other
commands read the store alone and import neither torch nor instructor, which keeps them fast to
start.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from semcache.cli.output import emit, iso, output_options, rounded, short_ids
from semcache.errors import CacheNotFoundError, SemcacheError, UsageError
from semcache.ops import admin, audit_log, traffic
from semcache.ops.check import check as check_file
from semcache.settings import DEFAULT_THRESHOLD
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


class _Group(click.Group):
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


class _Duration(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        try:
            return admin.parse_duration(str(value))
        except SemcacheError as exc:
            self.fail(str(exc), param, ctx)


DURATION = _Duration()


def filter_options(func: F) -> F:
    """The entry filters shared by ``ls`` and ``prune`` (see ``admin.EntryFilter``)."""
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


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semcache", prog_name="semcache")
def main() -> None:
    """Inspect, move and repair semcache caches (also runs as `python -m semcache`).

    DB is a cache file or a postgresql:// URL (README, "Running a fleet").

    Example: semcache stats cache.db
    """


@main.command()
@click.argument("db")
@output_options
def stats(db: str, fmt: str) -> None:
    """Entries, scopes, hits per tier, misses, tokens avoided, per-scope thresholds, the
    instructor cache= table, once shadow checks ran, the precision per scope, and the latest
    threshold changes (who, old, new, on how many labels); the store alone, no model.

    Example: semcache stats cache.db

    Example: semcache stats postgresql://semcache_app@db.internal/app
    """
    with _store(db) as store:
        numbers = admin.stats(store)
        changes = store.threshold_changes(limit=5)
    if changes:  # the most recent first: who moved which threshold, from what to what
        numbers["threshold_changes"] = [_change_row(c) for c in changes]
    for key in ("oldest_entry", "newest_entry"):
        numbers[key] = iso(numbers[key])
    if fmt != "json":  # one line per scope: "12 of 13 agree (0.923)"
        for scope, n in numbers.pop("shadow", {}).items():
            rate = n["agreements"] / n["samples"]
            numbers[f"shadow {scope[:12]}"] = (
                f"{n['agreements']} of {n['samples']} agree ({rate:.3f})"
            )
        # one line per change, newest first: "scope:3b719f25092… 0.95 -> 0.9 by tune, 460 labels"
        for i, change in enumerate(numbers.pop("threshold_changes", []), 1):
            target = change["target"]
            target = target if len(target) <= 18 else target[:17] + "…"
            labels = "" if change["labels"] is None else f", {change['labels']} labels"
            numbers[f"threshold change {i}"] = (
                f"{target} {change['old']} -> {change['new']} by {change['source']}{labels} "
                f"({change['at']})"
            )
    emit(numbers, fmt)


@main.command(name="ls")
@click.argument("db")
@filter_options
@click.option("--sort", type=click.Choice(admin.SORTS), default="recent", show_default=True)
@click.option("--limit", type=int, default=50, show_default=True, help="0 for all.")
@output_options
def ls(db: str, sort: str, limit: int, fmt: str, **filters: Any) -> None:
    """List entries, newest activity first (or most hit, with --sort hits).

    Example: semcache ls cache.db --schema Ticket --newer-than 7d --sort hits
    """
    with _store(db) as store:
        rows = admin.list_entries(
            store, admin.EntryFilter(**filters), sort=sort, limit=limit or None
        )
    for row in rows:
        row["created_at"], row["last_hit_at"] = iso(row["created_at"]), iso(row["last_hit_at"])
    emit(rows, fmt, widths={"scope": 12, "prompt": 50})


@main.command()
@click.argument("db")
@click.argument("entry_id", metavar="ID", type=int)
@output_options
def show(db: str, entry_id: int, fmt: str) -> None:
    """Every column of one entry, its JSON columns decoded.

    Example: semcache show cache.db 42
    """
    with _store(db) as store:
        entry = admin.get_entry(store, entry_id)
    for key, value in entry.items():
        if key.endswith("_json") and isinstance(value, str):
            with contextlib.suppress(ValueError):
                entry[key] = json.loads(value)
        elif key.endswith("_at"):
            entry[key] = iso(value)
    emit(entry, fmt, widths={})


@main.command()
@click.argument("db")
@click.argument("text")
@click.option("--namespace", help="Search the scopes of this namespace.")
@click.option("--model", help="Search the scopes of this LLM model.")
@click.option("--schema", "schema_name", help="Search the scopes of this response model.")
@click.option("--scope", help="Search one scope (hash or prefix).")
@click.option("-k", "k", type=int, default=5, show_default=True, help="How many neighbours.")
@click.option(
    "--threshold",
    type=float,
    help=f"Default: the persisted one per scope, or {DEFAULT_THRESHOLD}.",
)
@click.option("--embedder", help="Embedding model; default: the one DB was created with.")
@output_options
def query(
    db: str,
    text: str,
    k: int,
    threshold: float | None,
    embedder: str | None,
    fmt: str,
    **filters: Any,
) -> None:
    """The entries nearest to TEXT, with cosine similarity and the hit/miss verdict.

    Loads the embedding model. The verdict compares the similarity with the threshold the cache
    would apply to that scope (persisted per scope or schema, else 0.87) unless --threshold is
    given; a served hit also needs the stored answer to validate against the response model.

    Example: semcache query cache.db "where is my parcel" --schema Ticket --threshold 0.9
    """
    from semcache.embedding.resolve import resolve_embedder

    with _store(db) as store:
        model = resolve_embedder(_embedder_arg(embedder or store.settings().get("embedder_name")))
        store.check_settings({"embedder_name": model.name})  # vectors of one model only
        flt = admin.EntryFilter(**filters)
        scopes = admin.scopes(store, flt)
        found = admin.nearest(store, model, text, threshold=threshold, flt=flt, k=k)
    results = [n.__dict__ for n in found]
    if fmt == "json":
        emit({"text": text, "threshold": threshold, "scopes": scopes, "results": results}, fmt)
        return
    if fmt == "table":
        rule = "as the cache applies it" if threshold is None else threshold
        click.echo(f"searched {len(scopes)} scope(s), threshold {rule}:")
        emit(scopes, fmt, widths={"scope": 12})
        click.echo()
    emit(results, fmt, widths={"scope": 12, "prompt": 50})


@main.command(name="log")
@click.argument("db")
@click.option("--verdict", type=click.Choice(audit_log.VERDICTS), help="Only this verdict.")
@click.option("--since", type=DURATION, help="Only the last 1h, 7d, ... of the log.")
@click.option("--scope", help="Scope hash or a prefix of it.")
@click.option("--limit", type=int, default=50, show_default=True, help="0 for all.")
@click.option("--vetoes", is_flag=True, help="List the vetoes table instead of the audit log.")
@output_options
def log_command(
    db: str,
    verdict: str | None,
    since: float | None,
    scope: str | None,
    limit: int,
    vetoes: bool,
    fmt: str,
) -> None:
    """The audit log, newest first: each semantic decision's query, matched entry, similarity,
    verdict (hit, veto, below_threshold), reason and latency. Rows are written by caches opened
    with SemanticCache(audit=True). With --vetoes: every vetoed candidate, with the stage and why.

    Example: semcache log cache.db --verdict veto --since 1h
    """
    if vetoes and verdict:
        raise UsageError("--verdict filters the audit log; --vetoes lists vetoes, which have none")
    with _store(db) as store:
        options: dict[str, Any] = {"since": since, "scope": scope, "limit": limit or None}
        if vetoes:
            rows = audit_log.veto_rows(store, **options)
        else:
            rows = audit_log.audit_rows(store, verdict=verdict, **options)
    for row in rows:
        row["created_at"] = iso(row["created_at"])
    text = {"query": 40, "matched_prompt": 40, "candidate": 40, "reason": 40}
    emit(rows, fmt, widths={"scope": 12, **text})


@main.command(name="export")
@click.argument("db")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace an earlier export in FOLDER.")
@output_options
def export_command(db: str, folder: str, overwrite: bool, fmt: str) -> None:
    """Write DB to FOLDER: manifest, entries.jsonl, embeddings.npy, one FAISS index per scope.

    Example: semcache export cache.db cache-export/
    """
    from semcache.ops.engines import export_store

    with _store(db) as store:
        report = export_store(store, folder, overwrite=overwrite, progress=None)
    emit({**report.__dict__, "folder": str(report.folder)}, fmt)


@main.command(name="import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.argument("db")
@click.option("--scope", "scopes", multiple=True, help="Only this scope (repeatable, prefixes ok).")
@click.option("--namespace", "namespaces", multiple=True, help="Only this namespace (repeatable).")
@click.option("--newer-than", type=DURATION, help="Only entries created more recently (7d).")
@click.option("--embedder", help="DB's embedding model; default: DB's, else the export's.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Texts per re-embed.")
@output_options
def import_command(db: str, folder: str, embedder: str | None, fmt: str, **options: Any) -> None:
    """Merge an export into DB (a file or a PostgreSQL schema, created if missing); entries
    already in DB are skipped.

    Checksums are verified first; the merge is one transaction. Prompts are re-embedded only when
    DB's embedding model differs from the export's.

    Example: semcache import cache-export/ other.db --namespace support
    """
    from semcache.cache import SemanticCache

    name = embedder or _recorded_embedder(db) or _manifest_embedder(folder)
    with SemanticCache(db, embedder=_embedder_arg(name), busy_timeout=_budget(db)) as cache:
        report = cache.import_export(folder, progress=None, **options)
    emit({k: v for k, v in report.__dict__.items() if k != "id_map"}, fmt)


@main.command()
@click.argument("db")
@click.option("--fix", is_flag=True, help="Repair what can be repaired (see README).")
@output_options
def check(db: str, fix: bool, fmt: str) -> None:
    """Verify integrity, settings, embeddings, JSON columns and the derived index; exit 1 on a
    problem left unfixed.

    Example: semcache check cache.db --fix
    """
    with _store(db) as store:
        report = check_file(store, fix=fix)
    rows = [
        {
            "check": f.check,
            "status": "ok" if f.ok else (f"fixed {f.fixed}" if f.fixed else "PROBLEM"),
            "detail": f.detail,
        }
        for f in report.findings
    ]
    emit(rows, fmt, widths={"detail": 100})
    if not report.ok:
        raise click.exceptions.Exit(1)


@main.command()
@click.argument("db")
@filter_options
@click.option("--invalid-for", metavar="MODULE:CLASS", help="Answers that no longer validate.")
@click.option("--dry-run", is_flag=True, help="Count, delete nothing.")
@output_options
def prune(db: str, invalid_for: str | None, dry_run: bool, fmt: str, **filters: Any) -> None:
    """Delete entries by age, TTL, scope, schema, never-hit, or answers no longer valid.

    Example: semcache prune cache.db --invalid-for myapp.models:Ticket --dry-run
    """
    model_cls = admin.load_model_class(invalid_for) if invalid_for else None
    with _store(db) as store:
        ids = admin.prune(
            store, admin.EntryFilter(**filters), invalid_for=model_cls, dry_run=dry_run
        )
    key = "would_delete" if dry_run else "deleted"
    emit({key: len(ids), "ids": ids if fmt == "json" else short_ids(ids)}, fmt)


@main.command()
@click.argument("db")
@output_options
def vacuum(db: str, fmt: str) -> None:
    """Give the space of deleted entries back to the file system (on PostgreSQL: a plain VACUUM
    of the cache's tables, which makes the space reusable without locking the nodes out).

    Example: semcache vacuum cache.db
    """
    with _store(db) as store:
        emit(admin.vacuum(store), fmt)


@main.command()
@click.argument("source", metavar="FILE")
@click.option("--no-verify", is_flag=True, help="Measure cosine alone, without the verifier.")
@click.option("--split", default=None, help="Only pairs of this split (e.g. test).")
@click.option("--from-traffic", is_flag=True, help="FILE is a cache: calibrate on its live labels.")
@click.option(
    "--target", type=float, default=0.99, show_default=True, help="Precision to reach (traffic)."
)
@click.option("--apply", is_flag=True, help="Write the proposed thresholds (with --from-traffic).")
@output_options
def tune(
    source: str,
    no_verify: bool,
    split: str | None,
    from_traffic: bool,
    target: float,
    apply: bool,
    fmt: str,
) -> None:
    """Sweep thresholds over a labeled file: precision, recall, false-hit rate, F1 and hit rate
    per threshold, with hits checked by the default verifier as in the cache.

    With --from-traffic, FILE is a cache (a file or a postgresql:// URL): each scope's precision
    against the threshold from its live labels (near misses, shadow checks, mark_wrong), then the
    threshold calibration would set (the lowest whose 95% lower bound reaches --target); --apply
    writes them, logged. The store alone, no model.

    Example: semcache tune data/pairs/pairs.jsonl --split test

    Example: semcache tune cache.db --from-traffic --target 0.99 --apply
    """
    if from_traffic:
        _tune_from_traffic(source, target, apply, fmt)
        return
    if apply:
        raise UsageError("--apply writes thresholds into a cache: use it with --from-traffic")
    if not Path(source).is_file():
        raise UsageError(f"{redact(source)}: no such file of labeled pairs")
    from semcache.ops import tuning  # imported here: it embeds, so it loads the model

    rows = tuning.sweep_file(source, verifier=None if no_verify else "default", split=split)
    columns = (
        "threshold",
        "precision",
        "precision_low",
        "recall",
        "false_hit_rate",
        "f1",
        "hit_rate",
    )
    emit([{c: rounded(row.get(c)) for c in columns} for row in rows], fmt)


def _tune_from_traffic(db: str, target: float, apply: bool, fmt: str) -> None:
    if not 0.0 < target <= 1.0:
        raise UsageError(f"--target is a precision in (0, 1], got {target}")
    with _store(db) as store:
        reports = traffic.from_traffic(store, target=target, apply=apply)
        changes = store.threshold_changes(limit=10)
    curves, decisions = traffic.curve_rows(reports), traffic.decision_rows(reports)
    if fmt == "json":
        emit({"target": target, "applied": apply, "scopes": decisions, "curves": curves}, fmt)
        return
    if fmt == "csv":
        emit(curves, fmt)
        return
    if not reports:
        click.echo("no labels yet: near misses, shadow checks and mark_wrong write them")
        return
    emit(curves, fmt, widths={"scope": 12})
    click.echo()
    emit(decisions, fmt, widths={"scope": 12, "reason": 70})
    click.echo(f"\n{'applied' if apply else 'proposed (use --apply to write)'}; recent changes:")
    emit([_change_row(c) for c in changes], fmt, widths={"target": 18})


def _change_row(change: Any) -> dict[str, Any]:
    evidence = change.evidence
    return {
        "at": iso(change.created_at), "target": change.target, "old": rounded(change.old),
        "new": rounded(change.new), "source": change.source, "labels": evidence.get("labels"),
        "precision_low": rounded(evidence.get("low")),
    }  # fmt: skip


# -- opening caches ----------------------------------------------------------------------------


@contextlib.contextmanager
def _store(db: str) -> Iterator[Rows]:
    """The store of an existing cache: a file (opening it creates the views for sqlite3/Datasette
    users) or a PostgreSQL schema holding one; never an empty new cache reporting zeros."""
    store = open_existing(db, busy_timeout=_budget(db))
    try:
        yield store
    finally:
        store.close()


def _budget(db: str) -> float:
    """How long a statement may run on PostgreSQL; on SQLite, how long to wait for a lock."""
    return STATEMENT_BUDGET if is_postgres(db) else 5.0


def _recorded_embedder(db: str) -> str | None:
    """The embedding model DB was created with; None when DB holds no cache yet."""
    try:
        with _store(db) as store:
            return store.settings().get("embedder_name")
    except CacheNotFoundError:
        return None


def _manifest_embedder(folder: str) -> str | None:
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        name = json.loads((Path(folder) / "manifest.json").read_text())["embedder"]["name"]
        return name if isinstance(name, str) else None
    return None  # import_export reports what is wrong with the folder


def _embedder_arg(name: str | None) -> str | None:
    """None selects the bundled offline copy of the default model instead of a download."""
    from semcache.embedding.base import DEFAULT_MODEL_NAME

    return None if name in (None, DEFAULT_MODEL_NAME) else name
