"""The ``semcache`` command line, driven through click's CliRunner and as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from semcache import SemanticCache
from semcache.cli import main
from semcache.embedding.resolve import BUNDLED_THRESHOLD, TUNED_THRESHOLD
from semcache.integrations.instructor_cache import SQLiteCache

from .corpus import MODEL, Ticket, msgs, open_copy

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(template: Path, tmp_path: Path, embedder: Any) -> str:
    """A closed copy of the filled cache: the CLI opens it like any other program would."""
    open_copy(template, tmp_path / "cli.db", embedder).close()
    return str(tmp_path / "cli.db")


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def fails_with(message: str, *args: str) -> None:
    """A library or usage error: exit code 1 and one line on stderr, never a traceback."""
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.stderr and "Traceback" not in result.output
    assert len([line for line in result.stderr.splitlines() if line.startswith("Error")]) == 1


def test_every_command_is_documented_with_an_example() -> None:
    readme = (REPO / "README.md").read_text()
    expected = [
        "stats",
        "ls",
        "show",
        "query",
        "log",
        "export",
        "import",
        "check",
        "prune",
        "vacuum",
        "tune",
    ]
    assert sorted(main.commands) == sorted(expected)
    for name in main.commands:
        assert f"semcache {name}" in readme, f"`semcache {name}` missing from README.md"
        help_text = ok(name, "--help").stdout
        assert "Example:" in help_text and f"semcache {name}" in help_text, name
        assert "--json" in help_text and "--csv" in help_text
    assert "python -m semcache" in readme


def test_stats(db: str) -> None:
    numbers = as_json("stats", db)
    assert (numbers["entries"], numbers["embedded"], numbers["scopes"]) == (13, 12, 5)
    assert (numbers["exact_hits"], numbers["semantic_hits"]) == (2, 1)
    assert numbers["embedder_name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert numbers["scope_thresholds"] == 0 and numbers["instructor_cache_entries"] == 0
    assert "shadow" not in numbers
    table = ok("stats", db).stdout
    assert any(line.split() == ["entries", "13"] for line in table.splitlines())


def test_stats_shows_the_instructor_cache_thresholds_and_shadow(db: str) -> None:
    with SemanticCache(db) as cache:
        scope = next(r[0] for r in cache.db.connection().execute("SELECT scope FROM entries"))
        cache.set_threshold(0.97, scope=scope)
        for agree in (True, True, True, False):
            cache.db.add_shadow(scope, 1, 0.93, agree, [] if agree else ["text"])
        with SQLiteCache(cache) as instructor:
            instructor.set("k", '{"name": "Jason"}', ttl=60)
            assert instructor.get("k") is not None and instructor.get("other") is None
    numbers = as_json("stats", db)
    assert numbers["scope_thresholds"] == 1
    assert [numbers[f"instructor_cache_{k}"] for k in ("entries", "expired", "hits", "misses")] == [
        1,
        0,
        1,
        1,
    ]
    assert numbers["shadow"] == {scope: {"samples": 4, "agreements": 3}}
    lines = ok("stats", db).stdout.splitlines()
    assert [line.split() for line in lines if line.startswith("shadow")] == [
        ["shadow", scope[:12], "3", "of", "4", "agree", "(0.750)"]
    ]
    assert any(line.split() == ["instructor_cache_hits", "1"] for line in lines)
    rows = list(csv.DictReader(io.StringIO(ok("stats", db, "--csv").stdout)))
    assert {r["key"]: r["value"] for r in rows}[f"shadow {scope[:12]}"] == "3 of 4 agree (0.750)"


def test_ls_filters_sorts_and_formats(db: str) -> None:
    rows = as_json("ls", db, "--sort", "hits", "--limit", "2")
    assert [(r["prompt"], r["hits"]) for r in rows] == [
        ("Cancel my subscription", 2),
        ("Where is my parcel?", 1),
    ]
    assert rows[0]["created_at"].endswith("Z") and len(rows[0]["scope"]) == 64
    orders = as_json("ls", db, "--schema", "Order")
    assert [r["model"] for r in orders] == ["gpt-4o"]
    assert len(as_json("ls", db, "--namespace", "tenant-b")) == 1
    assert len(as_json("ls", db, "--never-hit", "--limit", "0")) == 11
    assert as_json("ls", db, "--older-than", "1d") == []
    parsed = list(csv.DictReader(io.StringIO(ok("ls", db, "--csv", "--model", "gpt-4o").stdout)))
    assert [(r["prompt"], r["hits"]) for r in parsed] == [("Order A-1 please", "0")]
    table = ok("ls", db, "--scope", orders[0]["scope"][:10]).stdout.splitlines()
    assert table[0].split()[:3] == ["id", "scope", "namespace"] and len(table) == 3
    assert orders[0]["scope"][:11] + "…" in table[2]  # scopes shortened to 12 characters
    fails_with("not a duration", "ls", db, "--older-than", "soon")


def test_show(db: str) -> None:
    order_id = as_json("ls", db, "--schema", "Order")[0]["id"]
    entry = as_json("show", db, str(order_id))
    assert entry["response_json"] == {"order_id": "A-1"}  # JSON columns decoded
    assert entry["request_json"]["model"] == "gpt-4o" and entry["embedding"]["dimension"] == 384
    assert '"order_id": "A-1"' in ok("show", db, str(order_id)).stdout
    fails_with("no entry with id 4242", "show", db, "4242")


def test_missing_or_damaged_files_are_one_line_errors(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    fails_with("no such cache file", "stats", str(missing))
    assert not missing.exists()  # no empty cache created by a typo
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    fails_with("not a database", "ls", str(garbage))
    fails_with("no manifest.json", "import", str(tmp_path), str(tmp_path / "new.db"))


def test_query_shows_similarity_and_verdict(db: str) -> None:
    text = "Please cancel my subscription"
    args = ("query", db, text, "--schema", "Ticket", "--threshold", "0.85")
    report = as_json(*args, "--namespace", "default")
    assert report["threshold"] == 0.85 and len(report["scopes"]) == 3
    best = report["results"][0]
    assert best["prompt"] == "Cancel my subscription" and best["verdict"] == "hit"
    assert best["similarity"] > 0.85 and report["results"][-1]["verdict"] == "miss"
    table = ok(*args, "-k", "2").stdout
    assert "searched 4 scope(s), threshold 0.85" in table and " hit " in table
    strict = as_json("query", db, text, "--threshold", "0.999")
    assert {r["verdict"] for r in strict["results"]} == {"miss"}
    default = as_json("query", db, text)  # no --threshold: the default of the file's model
    assert default["threshold"] is None and default["results"][0]["threshold"] == BUNDLED_THRESHOLD


def test_export_then_import(db: str, tmp_path: Path) -> None:
    folder, copy = tmp_path / "out", tmp_path / "copy.db"
    exported = as_json("export", db, str(folder))
    assert (exported["entries"], exported["embedded"], exported["scopes"]) == (13, 12, 5)
    assert (folder / "manifest.json").is_file() and exported["bytes"] > 0
    fails_with("is an export", "export", db, str(folder))
    imported = as_json("import", str(folder), str(copy), "--namespace", "default")
    assert (imported["imported"], imported["filtered"], imported["re_embedded"]) == (12, 1, 0)
    again = as_json("import", str(folder), str(copy))
    assert (again["imported"], again["duplicates"]) == (1, 12)
    assert as_json("stats", str(copy))["entries"] == 13
    (folder / "entries.jsonl").write_text("{}\n")
    fails_with("does not match its checksum", "import", str(folder), str(copy))
    assert as_json("stats", str(copy))["entries"] == 13


def test_check_and_fix(db: str) -> None:
    assert {r["status"] for r in as_json("check", db)} == {"ok"}
    with SemanticCache(db) as cache, cache.db.transaction() as conn:
        bad = np.full(384, np.inf, dtype="<f4").tobytes()
        conn.execute("UPDATE entries SET embedding = ? WHERE id = 2", (bad,))
    result = run("check", db)
    assert result.exit_code == 1 and "PROBLEM" in result.stdout and "ids 2" in result.stdout
    fixed = CliRunner().invoke(main, ["check", db, "--fix", "--json"])
    assert fixed.exit_code == 0
    assert {r["check"]: r["status"] for r in json.loads(fixed.stdout)}["embeddings"] == "fixed 1"
    assert run("check", db).exit_code == 0


def test_prune_and_vacuum(db: str) -> None:
    fails_with("at least one criterion", "prune", db)
    dry = as_json("prune", db, "--never-hit", "--model", MODEL, "--dry-run")
    assert dry["would_delete"] == 10 and as_json("stats", db)["entries"] == 13
    assert as_json("prune", db, "--never-hit", "--model", MODEL)["deleted"] == 10
    assert as_json("stats", db)["entries"] == 3
    invalid = as_json("prune", db, "--invalid-for", "tests.test_admin:ShortTicket")
    assert invalid["deleted"] == 2  # "cancel my subscription" and "where is my parcel?"
    fails_with("cannot import", "prune", db, "--invalid-for", "nowhere:Model")
    sizes = as_json("vacuum", db)
    assert set(sizes) == {"bytes_before", "bytes_after"} and sizes["bytes_after"] > 0


def test_tune_prints_the_sweep(tmp_path: Path, embedder: Any) -> None:
    from semcache.ops import tuning

    labeled = tmp_path / "labeled.jsonl"
    pairs = [
        ("How do I reset my password?", "How can I reset my password?", 1),
        ("Where is order A-1234?", "Where is order A-1235?", 0),
        ("Is the store open on Sunday?", "Is the store closed on Sunday?", 0),
        ("Cancel my subscription", "Please cancel my subscription", 1),
        ("What is the capital of France?", "Who is the president of France?", 0),
    ]
    labeled.write_text(
        "".join(json.dumps({"a": a, "b": b, "label": y}) + "\n" for a, b, y in pairs)
    )
    rows = as_json("tune", str(labeled))
    direct = tuning.sweep_file(labeled)
    assert [r["threshold"] for r in rows] == [round(r["threshold"], 4) for r in direct]
    for shown, real in zip(rows, direct, strict=True):
        assert shown["recall"] == pytest.approx(real["recall"], abs=1e-3)
        assert shown["precision_low"] <= shown["precision"] or shown["precision"] is None
    unverified = as_json("tune", str(labeled), "--no-verify")
    at = {r["threshold"]: r for r in unverified}
    verified = {r["threshold"]: r for r in rows}
    t = min(at, key=lambda x: abs(x - 0.9))
    assert (
        at[t]["false_hit_rate"] >= verified[t]["false_hit_rate"]
    )  # the verifier only removes hits
    table = ok("tune", str(labeled)).stdout.splitlines()
    assert table[0].split()[:3] == ["threshold", "precision", "precision_low"]


def test_commands_that_do_not_embed_never_import_torch(db: str, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from semcache.cli import main
        db, folder, copy = sys.argv[1:4]
        commands = [["stats", db], ["ls", db], ["show", db, "1"], ["check", db], ["log", db],
                    ["log", db, "--vetoes"],
                    ["prune", db, "--never-hit", "--dry-run"], ["vacuum", db],
                    ["export", db, folder], ["import", folder, copy], ["ls", copy, "--json"]]
        for args in commands:
            code = main(args, standalone_mode=False)
            assert code in (None, 0), (args, code)
            heavy = {"torch", "sentence_transformers", "transformers"} & set(sys.modules)
            assert not heavy, (args, heavy)
        print("torch-free")
        """
    )
    argv = [sys.executable, "-c", script, db, str(tmp_path / "out"), str(tmp_path / "copy.db")]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("torch-free")


def test_python_dash_m_runs_the_cli(db: str) -> None:
    argv = [sys.executable, "-m", "semcache", "stats", db, "--json"]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["entries"] == 13
    argv = [sys.executable, "-m", "semcache", "show", db, "999"]
    usage = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert usage.returncode == 1 and usage.stderr.strip() == "Error: no entry with id 999"


def test_lookups_still_work_after_cli_maintenance(db: str, embedder: Any) -> None:
    ok("check", db, "--fix")
    ok("vacuum", db)
    with SemanticCache(db, threshold=0.85, embedder=embedder) as cache:
        hit = cache.lookup(msgs("Please cancel my subscription"), Ticket, model=MODEL)
        assert hit is not None and hit.tier == "semantic"


def test_query_help_states_the_default_thresholds() -> None:
    result = CliRunner().invoke(main, ["query", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert f"({TUNED_THRESHOLD} tuned, {BUNDLED_THRESHOLD} bundled)." in text
    assert f"{TUNED_THRESHOLD} for the tuned model, {BUNDLED_THRESHOLD} for the bundled" in text
