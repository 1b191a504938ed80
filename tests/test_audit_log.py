"""``semcache log``: audit and veto rows written by real lookups, read back with filters."""

from __future__ import annotations

import json
import shutil
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from semcache import SemanticCache, UsageError
from semcache.cli import main
from semcache.ops.audit_log import audit_rows, veto_rows
from semcache.storage.sqlite import SQLiteStore
from semcache.verifiers.base import ACCEPT, Verdict

from .test_export import MODEL, Ticket, msgs


class Refund(BaseModel):
    amount: float


class Sevens:
    """A small verifier for the test: vetoes any pair of texts where a 7 appears."""

    name = "sevens"

    def verify(self, query: str, candidate: str, similarity: float) -> Verdict:
        if "7" in query or "7" in candidate:
            return Verdict(False, "a 7 in the text")
        return ACCEPT


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> tuple[Path, dict[str, Any]]:
    """A closed cache file whose audit log holds a hit, two vetoes and a miss below threshold;
    also returns the ids and scopes of its two entries."""
    path = tmp_path_factory.mktemp("audited") / "audited.db"
    with SemanticCache(
        path, threshold=0.8, embedder=embedder, audit=True, verifier=Sevens()
    ) as cache:
        parcel = cache.store(
            msgs("Where is my parcel?"), Ticket, Ticket(text="parcel"), model=MODEL
        )
        refund = cache.store(
            msgs("Cancel my subscription"), Refund, Refund(amount=9.5), model=MODEL
        )
        hit = cache.lookup(msgs("Where's my parcel?"), Ticket, model=MODEL)  # 0.98: served
        assert hit is not None and hit.tier == "semantic"
        ticket_scope = hit.scope
        assert cache.lookup(msgs("Where is my parcel?"), Ticket, model=MODEL) is not None  # exact
        time.sleep(0.01)  # distinct created_at for a stable newest-first order
        assert cache.lookup(msgs("Where is my parcel 7?"), Ticket, model=MODEL) is None  # 0.86
        time.sleep(0.01)
        assert cache.lookup(msgs("What is the capital of France?"), Ticket, model=MODEL) is None
        time.sleep(0.01)
        assert cache.lookup(msgs("Cancel my subscription 7"), Refund, model=MODEL) is None  # 0.9
    with closing(SQLiteStore(path)) as store:
        refund_scope = (
            store.connection()
            .execute("SELECT scope FROM entries WHERE id = ?", (refund,))
            .fetchone()[0]
        )
    assert ticket_scope != refund_scope
    return path, {
        "parcel": parcel,
        "refund": refund,
        "ticket": ticket_scope,
        "refund_scope": refund_scope,
    }


@pytest.fixture
def logged(audited: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """A copy of the audited file (closed, so its WAL is checkpointed): tests may change it."""
    path, ids = audited
    assert not path.with_name(path.name + "-wal").exists()
    shutil.copyfile(path, tmp_path / "logged.db")
    return str(tmp_path / "logged.db"), ids


def log(*args: str) -> Any:
    result = CliRunner().invoke(main, ["log", *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_log_lists_the_audit_newest_first(logged: tuple[str, dict[str, Any]]) -> None:
    db, ids = logged
    rows = log(db)
    assert [(r["query"], r["verdict"]) for r in rows] == [
        ("Cancel my subscription 7", "veto"),
        ("What is the capital of France?", "below_threshold"),
        ("Where is my parcel 7?", "veto"),
        ("Where's my parcel?", "hit"),  # the exact hit is not a semantic decision: not logged
    ]
    veto, miss, parcel_veto, hit = rows
    assert (hit["entry_id"], hit["matched_prompt"], hit["reason"]) == (
        ids["parcel"],
        "Where is my parcel?",
        "",
    )
    assert 0.95 < hit["similarity"] <= 1.0 and hit["latency_ms"] > 0
    assert hit["scope"] == ids["ticket"]
    assert (parcel_veto["entry_id"], parcel_veto["matched_prompt"]) == (
        ids["parcel"],
        "Where is my parcel?",
    )
    assert parcel_veto["reason"] == "sevens: a 7 in the text"
    assert 0.8 <= parcel_veto["similarity"] < 0.95
    assert (veto["entry_id"], veto["matched_prompt"]) == (ids["refund"], "Cancel my subscription")
    assert (miss["entry_id"], miss["matched_prompt"]) == (None, None)
    assert miss["similarity"] < 0.8
    for row in rows:  # ISO 8601 in UTC, from the epoch seconds stored
        assert time.strptime(row["created_at"], "%Y-%m-%dT%H:%M:%SZ")
        # Milliseconds: each semantic decision embedded a text (> 0), none took a minute.
        assert 0 < row["latency_ms"] < 60_000


def test_log_filters(logged: tuple[str, dict[str, Any]]) -> None:
    db, ids = logged
    vetoes = log(db, "--verdict", "veto")
    assert [r["query"] for r in vetoes] == ["Cancel my subscription 7", "Where is my parcel 7?"]
    assert [r["verdict"] for r in log(db, "--verdict", "hit")] == ["hit"]
    in_scope = log(db, "--scope", ids["ticket"][:8])
    assert len(in_scope) == 3 and {r["scope"] for r in in_scope} == {ids["ticket"]}
    assert [r["query"] for r in log(db, "--limit", "1")] == ["Cancel my subscription 7"]
    assert len(log(db, "--limit", "0")) == 4
    assert len(log(db, "--since", "1h")) == 4
    with closing(SQLiteStore(db)) as store, store.transaction() as conn:  # two rows from last week
        conn.execute("UPDATE audit SET created_at = created_at - 7 * 86400 WHERE verdict = 'veto'")
    assert [r["verdict"] for r in log(db, "--since", "1d")] == ["below_threshold", "hit"]
    assert len(log(db, "--since", "8d", "--verdict", "veto")) == 2


def test_log_vetoes(logged: tuple[str, dict[str, Any]]) -> None:
    db, ids = logged
    rows = log(db, "--vetoes")
    assert [(r["query"], r["candidate"], r["stage"], r["reason"]) for r in rows] == [
        ("Cancel my subscription 7", "Cancel my subscription", "sevens", "a 7 in the text"),
        ("Where is my parcel 7?", "Where is my parcel?", "sevens", "a 7 in the text"),
    ]
    assert [r["entry_id"] for r in rows] == [ids["refund"], ids["parcel"]]
    assert all(0.8 <= r["similarity"] < 0.95 for r in rows)
    only = log(db, "--vetoes", "--scope", ids["refund_scope"][:10], "--since", "1h")
    assert [r["query"] for r in only] == ["Cancel my subscription 7"]
    table = CliRunner().invoke(main, ["log", db, "--vetoes"]).stdout.splitlines()
    assert table[0].split()[:4] == ["id", "created_at", "scope", "entry_id"] and len(table) == 4
    refused = CliRunner().invoke(main, ["log", db, "--vetoes", "--verdict", "hit"])
    assert refused.exit_code == 1 and "--verdict filters the audit log" in refused.stderr


def test_log_table_and_empty_log(logged: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    db, _ = logged
    table = CliRunner().invoke(main, ["log", db, "--verdict", "below_threshold"]).stdout
    lines = table.splitlines()
    assert lines[0].split() == [
        "id",
        "created_at",
        "scope",
        "query",
        "entry_id",
        "matched_prompt",
        "similarity",
        "verdict",
        "reason",
        "latency_ms",
    ]
    assert "What is the capital of France?" in lines[2] and "below_threshold" in lines[2]
    SQLiteStore(tmp_path / "quiet.db").close()
    quiet = CliRunner().invoke(main, ["log", str(tmp_path / "quiet.db")])
    assert quiet.exit_code == 0 and quiet.stdout.strip() == "(no rows)"


def test_library_functions(logged: tuple[str, dict[str, Any]]) -> None:
    db, ids = logged
    with closing(SQLiteStore(db)) as store:
        rows = audit_rows(store, verdict="below_threshold")
        assert len(rows) == 1 and isinstance(rows[0]["created_at"], float)
        assert len(audit_rows(store, limit=None)) == 4
        future = time.time() + 3600
        assert audit_rows(store, since=60, now=future) == []
        assert [r["entry_id"] for r in veto_rows(store, scope=ids["ticket"])] == [ids["parcel"]]
        with pytest.raises(UsageError):
            audit_rows(store, verdict="miss")
        with pytest.raises(UsageError):
            veto_rows(store, limit=-1)
