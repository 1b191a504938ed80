"""``check``: a clean file passes; damaged embeddings, JSON and settings are found and repaired."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from semcache import SemanticCache
from semcache.ops import admin
from semcache.ops.admin import EntryFilter
from semcache.ops.check import check

from .corpus import MODEL, SYSTEM, Ticket, msgs


def corrupt(cache: SemanticCache) -> dict[str, int]:
    """Damage four entries in four ways; returns their ids by kind."""
    rows = admin.list_entries(cache.db, EntryFilter(model=MODEL, never_hit=True), sort="id")
    kinds = ("short", "nan", "json", "raw")
    ids = {kind: int(r["id"]) for kind, r in zip(kinds, rows, strict=False)}
    nan = np.full(384, np.nan, dtype="<f4").tobytes()
    with cache.db.transaction() as conn:
        conn.execute("UPDATE entries SET embedding = x'0000' WHERE id = ?", (ids["short"],))
        conn.execute("UPDATE entries SET embedding = ? WHERE id = ?", (nan, ids["nan"]))
        conn.execute("UPDATE entries SET response_json = '{broken' WHERE id = ?", (ids["json"],))
        conn.execute("UPDATE entries SET raw_json = 'nope' WHERE id = ?", (ids["raw"],))
    return ids


def test_check_finds_and_fixes_damage(filled: SemanticCache, embedder: Any) -> None:
    clean = check(filled.db)
    assert clean.ok and all(f.ok for f in clean.findings)
    assert {f.check for f in clean.findings} >= {
        "sqlite integrity",
        "embeddings",
        "index",
        "counts",
    }
    ids = corrupt(filled)
    report = check(filled.db)
    failing = {f.check: f for f in report.findings if not f.ok}
    assert not report.ok and set(failing) == {"embeddings", "answer JSON", "completion JSON"}
    assert "2 broken" in failing["embeddings"].detail
    assert str(ids["json"]) in failing["answer JSON"].detail
    assert filled.db.count() == 13  # checking alone changes nothing

    fixed = check(filled.db, fix=True)
    assert fixed.ok and {f.check: f.fixed for f in fixed.findings if f.fixed} == {
        "embeddings": 2,
        "answer JSON": 1,
        "completion JSON": 1,
    }
    assert check(filled.db).ok and filled.db.count() == 12
    assert admin.get_entry(filled.db, ids["short"])["embedding"] is None
    assert admin.get_entry(filled.db, ids["raw"])["raw_json"] is None
    # A cache opened now rebuilds its index from the repaired rows; the entries whose vectors were
    # dropped are still served by the exact tier.
    assert filled.db.path is not None
    with SemanticCache(filled.db.path, threshold=0.85, embedder=embedder) as reopened:
        entry = admin.get_entry(reopened.db, ids["nan"])
        system = SYSTEM if "sys:" in entry["response_json"] else None
        prompt = entry["prompt"]
        hit = reopened.lookup(msgs(prompt, system), Ticket, model=MODEL)
        assert hit is not None and hit.tier == "exact"
        near = reopened.lookup(msgs("Please cancel my subscription"), Ticket, model=MODEL)
        assert near is not None and near.tier == "semantic"


def test_check_records_a_missing_dimension(filled: SemanticCache) -> None:
    with filled.db.transaction() as conn:
        conn.execute("DELETE FROM settings WHERE key = 'embedder_dimension'")
    report = check(filled.db)
    dim = next(f for f in report.findings if f.check == "embedder dimension")
    assert not report.ok and "384" in dim.detail
    assert check(filled.db, fix=True).ok
    assert filled.db.settings()["embedder_dimension"] == "384"


def test_check_on_an_empty_file() -> None:
    from semcache.storage.sqlite import SQLiteStore

    store = SQLiteStore(":memory:")
    report = check(store, fix=True)
    assert report.ok and not any(f.fixed for f in report.findings)
    details = {f.check: f.detail for f in report.findings}
    assert details["embedder dimension"] == "none yet (no embeddings)"
    assert details["counts"] == "0 entries, 0 embedded, 0 scopes"
    store.close()


def test_check_reads_the_saved_index_files(
    filled: SemanticCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semcache.index import file_format
    from semcache.index import vector_index as index_module

    monkeypatch.setattr(index_module, "PERSIST_AT", 1)
    assert filled.lookup(msgs("Please cancel my subscription"), Ticket, model=MODEL) is not None
    assert filled.pipeline.scopes.index is not None and filled.pipeline.scopes.index.save() >= 1
    assert filled.db.path is not None
    folder = file_format.folder_for(filled.db.path)
    files = sorted(folder.glob("*.faiss"))
    saved = next(f for f in check(filled.db).findings if f.check == "saved indexes")
    assert saved.ok and saved.detail.startswith(f"{len(files)} checked, 0 unusable")

    damaged = bytearray(files[0].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    files[0].write_bytes(bytes(damaged))
    (folder / f"{'0' * 64}.faiss").write_bytes(files[-1].read_bytes() if len(files) > 1 else b"")
    report = check(filled.db)
    saved = next(f for f in report.findings if f.check == "saved indexes")
    assert not report.ok and "2 unusable" in saved.detail
    assert "checksum does not match" in saved.detail
    assert files[0].exists()  # checking alone changes nothing

    fixed = next(f for f in check(filled.db, fix=True).findings if f.check == "saved indexes")
    assert fixed.fixed == 2 and not files[0].exists()
    again = next(f for f in check(filled.db).findings if f.check == "saved indexes")
    assert again.ok and again.detail.startswith(
        f"{len(files) - 1} checked" if len(files) > 1 else "none"
    )
    # The scope whose file was deleted is rebuilt from SQLite and still serves its paraphrase.
    filled.pipeline.scopes.index.drop(files[0].stem)
    hit = filled.lookup(msgs("Please cancel my subscription"), Ticket, model=MODEL)
    assert hit is not None
