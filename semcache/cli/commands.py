"""The ``semcache`` command line: thin click commands over ``semcache.ops``.

``admin`` (stats, ls, show, query, prune, vacuum), ``check``, ``audit_log`` (log), ``export`` and
``importer``; ``tune`` (over ``tuning`` and ``traffic``) is ``semcache.cli.tune``, added to the same
group. ``semcache.cli.output`` prints what they return.

Each command opens the cache (a SQLite file, or a ``postgresql://`` URL: every command works on
both), calls one library function and formats what it returns, so everything the CLI does is also
a function call away. What surrounds that call is the same for every command and lives in
``semcache.cli.harness``: library and environment errors become one-line messages with exit code 1
(a traceback means a bug), and a cache is opened with the time budget its statements need. Only
``query``, and ``import`` when it must re-embed, load the embedding model: the other commands read
the store alone and import neither torch nor instructor, which keeps them fast to start.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import click

from semcache.cli.harness import (
    DURATION,
    CommandGroup,
    budget,
    embedder_arg,
    filter_options,
    manifest_embedder,
    open_store,
    recorded_embedder,
)
from semcache.cli.output import change_row, emit, iso, output_options, short_ids
from semcache.cli.tune import tune
from semcache.embedding.resolve import BUNDLED_THRESHOLD, TUNED_THRESHOLD
from semcache.errors import UsageError
from semcache.ops import admin, audit_log
from semcache.ops.check import check as check_file
from semcache.ops.entry_filter import EntryFilter


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="semcache", prog_name="semcache")
def main() -> None:
    """Inspect, move and repair semcache caches (also runs as `python -m semcache`).

    DB is a cache file or a postgresql:// URL (README, "Running a fleet").

    Example: semcache stats cache.db
    """


main.add_command(tune)  # thresholds rather than entries: semcache.cli.tune


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
    with open_store(db) as store:
        numbers = admin.stats(store)
        changes = store.threshold_changes(limit=5)
    if changes:  # the most recent first: who moved which threshold, from what to what
        numbers["threshold_changes"] = [change_row(c) for c in changes]
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
    with open_store(db) as store:
        rows = admin.list_entries(store, EntryFilter(**filters), sort=sort, limit=limit or None)
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
    with open_store(db) as store:
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
    help=(
        "Default: the persisted one per scope, else the default of DB's embedding model "
        f"({TUNED_THRESHOLD} tuned, {BUNDLED_THRESHOLD} bundled)."
    ),
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
    would apply to that scope (persisted per scope or schema, else the default of the embedding
    model DB was made with: 0.911 for the tuned model, 0.87 for the bundled one) unless
    --threshold is given; a served hit also needs the stored answer to validate against the response model.

    Example: semcache query cache.db "where is my parcel" --schema Ticket --threshold 0.9
    """
    from semcache.embedding.resolve import resolve_embedder

    with open_store(db) as store:
        model = resolve_embedder(embedder_arg(embedder or store.settings().get("embedder_name")))
        store.check_settings({"embedder_name": model.name})  # vectors of one model only
        flt = EntryFilter(**filters)
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
    with open_store(db) as store:
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

    with open_store(db) as store:
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

    name = embedder or recorded_embedder(db) or manifest_embedder(folder)
    with SemanticCache(db, embedder=embedder_arg(name), busy_timeout=budget(db)) as cache:
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
    with open_store(db) as store:
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
    with open_store(db) as store:
        ids = admin.prune(store, EntryFilter(**filters), invalid_for=model_cls, dry_run=dry_run)
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
    with open_store(db) as store:
        emit(admin.vacuum(store), fmt)
