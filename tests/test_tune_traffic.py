"""``semcache tune DB --from-traffic``: per-scope curves from live labels, and --apply."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from pydantic import BaseModel

from semcache import SemanticCache
from semcache.cli import main


class Answer(BaseModel):
    text: str


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def labelled_file(path: Path, embedder: Any, right: int, wrong: int = 0) -> str:
    """A cache file with one scope, its threshold persisted at 0.95, and near-miss labels."""
    with SemanticCache(path, embedder=embedder) as cache:
        cache.store([{"role": "user", "content": "Where is my parcel?"}], Answer, Answer(text="a"))
        scope = str(cache.db.connection().execute("SELECT scope FROM entries").fetchone()[0])
        cache.set_threshold(0.95, scope=scope)
        now = time.time()
        rows = [
            (now, scope, 1, 0.90 + 0.05 * i / right, 0.95, "", 1, "[]", "q", "c", "{}", "{}", None)
            for i in range(right)
        ] + [
            (now, scope, 1, 0.94, 0.95, "", 0, '["text"]', "q", "c", "{}", "{}", None)
            for _ in range(wrong)
        ]
        cache.db.record({}, {}, {"near_misses": rows})
    return scope


def test_it_proposes_then_applies(tmp_path: Path, embedder: Any) -> None:
    db = tmp_path / "cache.db"
    scope = labelled_file(db, embedder, right=450)
    report = json.loads(run("tune", str(db), "--from-traffic", "--json").stdout)
    (decision,) = report["scopes"]
    assert (decision["scope"], decision["current"], decision["action"]) == (scope, 0.95, "lower")
    assert decision["proposed"] == 0.9 and decision["labels"] == 450
    grid = [row["threshold"] for row in report["curves"]]
    assert grid[0] == 0.95 and grid[-1] == 0.9 and len(grid) == 6
    assert report["curves"][-1]["served"] == 450
    with SemanticCache(db, embedder=embedder) as cache:
        assert cache.thresholds() == {f"scope:{scope}": 0.95}  # not written without --apply

    table = run("tune", str(db), "--from-traffic", "--apply").stdout
    assert "lower" in table and "applied" in table
    with SemanticCache(db, embedder=embedder) as cache:
        assert cache.thresholds() == {f"scope:{scope}": 0.9}
        change = cache.stats().threshold_changes[0]
    assert (change.old, change.new, change.source) == (0.95, 0.9, "tune")
    assert change.evidence["labels"] == 450 and change.evidence["low"] >= 0.99
    stats = json.loads(run("stats", str(db), "--json").stdout)
    assert stats["threshold_changes"][0]["new"] == 0.9
    lines = [line.split() for line in run("stats", str(db)).stdout.splitlines()]
    newest = next(line for line in lines if line[:3] == ["threshold", "change", "1"])
    assert newest[4:9] == ["0.95", "->", "0.9", "by", "tune,"] and newest[9] == "450"


def test_wrong_labels_keep_it_and_a_lax_target_moves_it(tmp_path: Path, embedder: Any) -> None:
    db = tmp_path / "cache.db"
    labelled_file(db, embedder, right=450, wrong=10)
    strict = json.loads(run("tune", str(db), "--from-traffic", "--json").stdout)
    assert strict["scopes"][0]["action"] == "keep"
    lax = json.loads(run("tune", str(db), "--from-traffic", "--target", "0.95", "--json").stdout)
    assert lax["scopes"][0]["action"] == "lower" and lax["scopes"][0]["proposed"] == 0.9


def test_a_file_without_labels(tmp_path: Path, embedder: Any) -> None:
    db = tmp_path / "cache.db"
    SemanticCache(db, embedder=embedder).close()
    assert "no labels yet" in run("tune", str(db), "--from-traffic").stdout
