"""The ``semcache tune`` command: thresholds from a labeled file or from a cache's live labels.

The other commands inspect, move or repair a cache; ``tune`` measures and sets thresholds. It
sweeps a file of labeled pairs (``semcache.ops.tuning``, which embeds and so loads the model) or
reads the live labels a cache has gathered and proposes, or applies, a threshold per scope
(``semcache.ops.traffic``, the store alone). Its two modes, the checks between their options and
the calibration report are read together here; ``semcache.cli.commands`` adds it to the
``semcache`` group.
"""

from __future__ import annotations

from pathlib import Path

import click

from semcache.cli.harness import open_store
from semcache.cli.output import change_row, emit, output_options, rounded
from semcache.errors import UsageError
from semcache.ops import traffic
from semcache.storage.location import redact


@click.command()
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
    with open_store(db) as store:
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
    emit([change_row(c) for c in changes], fmt, widths={"target": 18})
