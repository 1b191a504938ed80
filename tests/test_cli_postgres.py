"""Every ``semcache`` command on a ``postgresql://`` URL: the same answers as on the file it came
from, one-line errors for a server that is down or a schema holding no cache, and never the
password in any output."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from semcache import SemanticCache
from semcache.cli import main
from semcache.integrations.instructor_cache import SQLiteCache
from semcache.storage.postgres import PostgresStore

from .corpus import MODEL, Ticket, msgs, open_copy
from .pgserver import admin, dsn_for, private_schema, require_server

REPO = Path(__file__).resolve().parents[1]
SECRET = "pw-Cli-Secret-9137"  # trust auth ignores it; libpq still carries it in the URL


def run(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert SECRET not in result.output, args  # stdout and stderr: never the password
    return result


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def as_json(*args: str) -> Any:
    return json.loads(ok(*args, "--json").stdout)


def one_line_error(*args: str) -> str:
    """Exit code 1, nothing but one ``Error:`` line on stderr, no traceback, no password."""
    result = run(*args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    return lines[0]


@pytest.fixture
def file_db(template: Path, tmp_path: Path, embedder: Any) -> str:
    """A closed copy of the filled cache, with two rows in instructor's cache= table."""
    with open_copy(template, tmp_path / "cli.db", embedder) as cache, SQLiteCache(cache) as ic:
        ic.set("forever", '{"name": "Jason"}')
        ic.set("hour", '{"name": "Ada"}', ttl=3600)
    return str(tmp_path / "cli.db")


@pytest.fixture
def schema() -> Iterator[str]:
    require_server()
    with private_schema() as name:
        yield name


@pytest.fixture
def pg_db(file_db: str, schema: str, tmp_path: Path) -> str:
    """The same cache moved into a private schema with the CLI itself; a URL with a password."""
    dsn = dsn_for(schema, password=SECRET)
    ok("export", file_db, str(tmp_path / "moved"))
    imported = as_json("import", str(tmp_path / "moved"), dsn)
    assert (imported["imported"], imported["instructor_cache"]) == (13, 2)
    return dsn


def entry_rows(db: str, *args: str) -> list[tuple[Any, ...]]:
    rows = as_json("ls", db, "--limit", "0", *args)
    return sorted((r["prompt"] or "", r["scope"], r["namespace"], r["hits"]) for r in rows)


def test_read_commands_answer_on_a_dsn_as_on_the_file(file_db: str, pg_db: str) -> None:
    on_file, on_pg = as_json("stats", file_db), as_json("stats", pg_db)
    same = ("entries", "embedded", "exact_only", "scopes", "namespaces", "embedder_name",
            "format_version", "scope_thresholds", "default_threshold", "instructor_cache_entries")  # fmt: skip
    assert {k: on_pg[k] for k in same} == {k: on_file[k] for k in same}
    assert on_pg["entries"] == 13 and on_pg["instructor_cache_entries"] == 2
    assert on_pg["database"].count("***") == 1 and on_pg["database_bytes"] > 0
    assert "file" not in on_pg
    for args in ((), ("--schema", "Order"), ("--namespace", "tenant-b"), ("--never-hit",)):
        assert entry_rows(pg_db, *args) == entry_rows(file_db, *args), args
    top = as_json("ls", pg_db, "--sort", "hits", "--limit", "2")
    assert [(r["prompt"], r["hits"]) for r in top] == [
        ("Cancel my subscription", 2),
        ("Where is my parcel?", 1),
    ]
    table = ok("ls", pg_db, "--scope", top[0]["scope"][:10]).stdout.splitlines()
    assert table[0].split()[:3] == ["id", "scope", "namespace"]

    order = as_json("ls", pg_db, "--schema", "Order")[0]
    entry = as_json("show", pg_db, str(order["id"]))
    assert entry["response_json"] == {"order_id": "A-1"} and entry["embedding"]["dimension"] == 384
    assert one_line_error("show", pg_db, "424242") == "Error: no entry with id 424242"

    text = "Please cancel my subscription"
    found = [as_json("query", db, text, "--schema", "Ticket") for db in (file_db, pg_db)]
    assert [len(f["scopes"]) for f in found] == [4, 4]
    picked = [[(r["prompt"], r["similarity"], r["verdict"]) for r in f["results"]] for f in found]
    assert picked[0] == picked[1] and picked[1][0][0] == "Cancel my subscription"
    assert "searched 5 scope(s)" in ok("query", pg_db, text).stdout

    report = {r["check"]: r["status"] for r in as_json("check", pg_db)}
    assert set(report.values()) == {"ok"} and "entry count" in report


def test_the_audit_log_and_vetoes_of_a_fleet(pg_db: str, embedder: Any) -> None:
    with SemanticCache(pg_db, threshold=0.85, embedder=embedder, audit=True) as cache:
        assert cache.lookup(msgs("Please cancel my subscription"), Ticket, model=MODEL)
        assert cache.lookup(msgs("What is the capital of France?"), Ticket, model=MODEL) is None
    rows = as_json("log", pg_db)
    assert [r["verdict"] for r in rows] == ["below_threshold", "hit"]
    assert rows[1]["matched_prompt"] == "Cancel my subscription"
    assert [r["verdict"] for r in as_json("log", pg_db, "--verdict", "hit", "--since", "1h")] == [
        "hit"
    ]
    assert as_json("log", pg_db, "--vetoes") == []
    assert "below_threshold" in ok("log", pg_db).stdout


def test_prune_check_fix_vacuum_and_tune_write_to_the_database(pg_db: str, schema: str) -> None:
    dry = as_json("prune", pg_db, "--never-hit", "--model", MODEL, "--dry-run")
    assert dry["would_delete"] == 10 and as_json("stats", pg_db)["entries"] == 13
    assert as_json("prune", pg_db, "--never-hit", "--model", MODEL)["deleted"] == 10
    assert as_json("stats", pg_db)["entries"] == 3
    invalid = as_json("prune", pg_db, "--invalid-for", "tests.test_admin:ShortTicket")
    assert invalid["deleted"] == 2
    assert as_json("stats", pg_db)["entries"] == 1

    with admin() as conn:  # damage what check looks at: a vector, an answer, the kept count
        conn.execute(f"SET search_path TO {schema}")
        ids = [r[0] for r in conn.execute("SELECT id FROM entries ORDER BY id")]
        inf = np.full(384, np.inf, dtype="<f4").tobytes()
        conn.execute("UPDATE entries SET embedding = %s, usage_json = '{' WHERE id = %s",
                     (inf, ids[0]))  # fmt: skip
        conn.execute("UPDATE feed_state SET entries = 7")
    broken = run("check", pg_db, "--json")
    assert broken.exit_code == 1
    status = {r["check"]: r["status"] for r in json.loads(broken.stdout)}
    assert status["embeddings"] == status["completion JSON"] == status["entry count"] == "PROBLEM"
    fixed = {r["check"]: r["status"] for r in as_json("check", pg_db, "--fix")}
    assert fixed["embeddings"] == fixed["completion JSON"] == fixed["entry count"] == "fixed 1"
    assert {r["status"] for r in as_json("check", pg_db)} == {"ok"}
    assert as_json("stats", pg_db)["exact_only"] == 1  # the vector went, the answer stays

    sizes = as_json("vacuum", pg_db)
    assert set(sizes) == {"bytes_before", "bytes_after"} and sizes["bytes_after"] > 0

    with contextlib.closing(PostgresStore(pg_db)) as store:  # labels, as shadow checks take them
        for agree in (True,) * 30 + (False,):
            store.add_shadow("s" * 64, ids[0], 0.93, agree, [] if agree else ["text"])
    tuned = as_json("tune", pg_db, "--from-traffic", "--target", "0.9")
    assert [s["labels"] for s in tuned["scopes"]] == [31] and not tuned["applied"]
    assert tuned["curves"] and "proposed" in ok("tune", pg_db, "--from-traffic").stdout
    applied = as_json("tune", pg_db, "--from-traffic", "--target", "0.9", "--apply")
    if applied["scopes"][0]["proposed"] is not None:
        assert as_json("stats", pg_db)["scope_thresholds"] == 1


def test_export_from_a_dsn_imports_into_a_file(pg_db: str, tmp_path: Path) -> None:
    exported = as_json("export", pg_db, str(tmp_path / "out"))
    assert (exported["entries"], exported["embedded"], exported["instructor_cache"]) == (13, 12, 2)
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert SECRET not in manifest and "127.0.0.1" not in manifest
    copy = str(tmp_path / "back.db")
    imported = as_json("import", str(tmp_path / "out"), copy)
    assert (imported["imported"], imported["instructor_cache"]) == (13, 2)
    assert entry_rows(copy) == entry_rows(pg_db)


COMMANDS: list[tuple[str, ...]] = [
    ("stats", "{db}"),
    ("ls", "{db}"),
    ("show", "{db}", "1"),
    ("query", "{db}", "where is my parcel"),
    ("log", "{db}"),
    ("log", "{db}", "--vetoes"),
    ("export", "{db}", "{folder}"),
    ("check", "{db}"),
    ("check", "{db}", "--fix"),
    ("prune", "{db}", "--never-hit"),
    ("vacuum", "{db}"),
    ("tune", "{db}", "--from-traffic"),
]


def test_a_server_that_is_down_is_one_line_without_the_password(
    tmp_path: Path, file_db: str
) -> None:
    down = f"postgresql://postgres:{SECRET}@127.0.0.1:1/test"
    ok("export", file_db, str(tmp_path / "x"))
    for command in [*COMMANDS, ("import", str(tmp_path / "x"), "{db}")]:
        args = [a.format(db=down, folder=str(tmp_path / "out")) for a in command]
        line = one_line_error(*args)
        assert "unreachable" in line and "postgres:***@127.0.0.1:1" in line, (command, line)
    assert not (tmp_path / "out").exists()


def test_a_schema_without_a_cache_is_one_line_and_stays_empty(schema: str, tmp_path: Path) -> None:
    empty = dsn_for(schema, password=SECRET)
    for command in COMMANDS:
        args = [a.format(db=empty, folder=str(tmp_path / "out")) for a in command]
        line = one_line_error(*args)
        assert "no semcache cache there" in line and f"schema '{schema}'" in line, line
        assert ":***@" in line
    missing = dsn_for("semcache_no_such_schema", password=SECRET)
    assert "no schema of its search_path exists" in one_line_error("stats", missing)
    with admin() as conn:  # nothing was created by a command pointed at the wrong place
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)
        ).fetchone()
    assert tables == (0,)


def test_commands_on_a_dsn_that_do_not_embed_never_import_torch(pg_db: str, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from semcache.cli import main
        db, folder = sys.argv[1:3]
        for args in (["stats", db], ["ls", db], ["check", db], ["log", db], ["vacuum", db],
                     ["prune", db, "--never-hit", "--dry-run"], ["tune", db, "--from-traffic"],
                     ["export", db, folder]):
            code = main(args, standalone_mode=False)
            assert code in (None, 0), (args, code)
            heavy = {"torch", "sentence_transformers", "transformers"} & set(sys.modules)
            assert not heavy, (args, heavy)
        print("torch-free")
        """
    )
    argv = [sys.executable, "-c", script, pg_db, str(tmp_path / "out")]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("torch-free") and SECRET not in out.stdout + out.stderr


def test_maintenance_sql_keeps_quoted_text_and_escapes_percent(schema: str) -> None:
    import psycopg

    from semcache.storage.postgres.qmark import QmarkConnection, translate

    sql = "SELECT '?', \"a?\" FROM t WHERE x = ? AND y LIKE '50%' AND z % 2 = ?"
    assert translate(sql) == (
        "SELECT '?', \"a?\" FROM t WHERE x = %s AND y LIKE '50%%' AND z %% 2 = %s"
    )
    with psycopg.connect(dsn_for(schema), autocommit=True) as conn:
        run_sql = QmarkConnection(conn).execute
        assert run_sql("SELECT '50%' || ?, '?', 7 % ?", ["x", 3]).fetchone() == ("50%x", "?", 1)
        assert run_sql("SELECT '50%', 7 % 3").fetchone() == ("50%", 1)  # no parameters: as is
