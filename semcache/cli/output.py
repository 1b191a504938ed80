"""How the ``semcache`` commands print: a readable table, ``--json`` or ``--csv``.

One decorator, ``output_options``, gives every command the same three flags, and ``emit`` prints a
record (as key/value pairs) or a list of rows in the chosen format. Tables clip long cells to one
line; JSON and CSV always carry full values, for scripts.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
_CELL = 60  # widest table cell; --json and --csv always carry full values


def output_options(func: F) -> F:
    """``--table`` (the default), ``--json`` or ``--csv``: the same for every command."""
    func = click.option("--csv", "fmt", flag_value="csv", help="CSV with a header row.")(func)
    func = click.option("--json", "fmt", flag_value="json", help="JSON, full values.")(func)
    return click.option(
        "--table", "fmt", flag_value="table", default=True, help="A readable table (default)."
    )(func)


def emit(
    data: dict[str, Any] | list[dict[str, Any]], fmt: str, widths: dict[str, int] | None = None
) -> None:
    """Print a record (as key/value pairs) or a list of rows as a table, JSON or CSV."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return
    rows = [{"key": k, "value": v} for k, v in data.items()] if isinstance(data, dict) else data
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=_columns(rows), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _text(v) for k, v in row.items()} for row in rows)
        click.echo(buffer.getvalue(), nl=False)
    elif isinstance(data, dict):
        pad = max((len(k) for k in data), default=0)
        for key, value in data.items():
            text = _text(value, indent=True).replace("\n", "\n" + " " * (pad + 2))
            click.echo(f"{key.ljust(pad)}  {text}")
    else:
        click.echo(_table(rows, widths or {}))


def iso(timestamp: float | None) -> str | None:
    """Epoch seconds as a UTC ISO 8601 time (``2024-05-01T12:00:00Z``)."""
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def short_ids(ids: list[int]) -> str:
    """The first 20 ids, for a table; --json lists them all."""
    return ", ".join(map(str, ids[:20])) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")


def change_row(change: Any) -> dict[str, Any]:
    """A logged threshold change (``store.threshold_changes``) as a row: when, which target, old
    and new value, who changed it, and on how much evidence."""
    evidence = change.evidence
    return {
        "at": iso(change.created_at), "target": change.target, "old": rounded(change.old),
        "new": rounded(change.new), "source": change.source, "labels": evidence.get("labels"),
        "precision_low": rounded(evidence.get("low")),
    }  # fmt: skip


def _table(rows: list[dict[str, Any]], widths: dict[str, int]) -> str:
    if not rows:
        return "(no rows)"
    columns = _columns(rows)
    cells = [[_clip(_text(row.get(c)), widths.get(c, _CELL)) for c in columns] for row in rows]
    size = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    numeric = [_numeric([row.get(c) for row in rows]) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, size, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in size))
    for row in cells:
        parts = [
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(row, size, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _numeric(values: list[Any]) -> bool:
    """Right-align a column of numbers, blanks (None) included."""
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) for v in present)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _text(value: Any, indent: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2 if indent else None, ensure_ascii=False, default=str)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line per row, whatever the prompt holds
    return text if len(text) <= width else text[: width - 1] + "…"
