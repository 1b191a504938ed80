"""Export and import: the folder format, a lossless round trip checked with real lookups,
re-embedding, filters, and refusal of damaged exports without touching the target."""

from __future__ import annotations

import hashlib
import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

import semcache.ops.export as export_mod
from semcache import SemanticCache, SemcacheError
from semcache.embedding import SentenceTransformerEmbedder
from semcache.ops.export import export, import_export, verify_export

from .corpus import (
    MODEL,
    QUERIES,
    SYSTEM,
    Order,
    Ticket,
    image_msgs,
    msgs,
    records,
)


def test_folder_layout_and_manifest(filled: SemanticCache, tmp_path: Path) -> None:
    report = export(filled, tmp_path / "out")
    folder = tmp_path / "out"
    manifest = json.loads((folder / "manifest.json").read_text())
    rows = records(folder)
    assert report.entries == len(rows) == 13 and manifest["entries"] == 13
    # 12 text entries are embedded; the image request is exact-only.
    assert report.embedded == manifest["embedded"] == 12
    assert manifest["embedder"] == {
        "name": "sentence-transformers/all-MiniLM-L6-v2",
        "dimension": 384,
        "normalization": "l2",
        "similarity": "cosine (inner product of the L2-normalized vectors)",
    }
    assert manifest["threshold"] == 0.85
    assert "embedding" not in rows[0] and set(manifest["columns"]) == set(rows[0])
    assert {"prompt", "exact_key", "scope", "response_json", "raw_json", "usage_json"} <= set(
        rows[0]
    )
    by_scope = {s: sum(r["scope"] == s for r in rows) for s in {r["scope"] for r in rows}}
    assert {s: v["entries"] for s, v in manifest["scopes"].items()} == by_scope
    # plain, with a system prompt, Order on another model, tenant-b, the image request (exact-only)
    assert len(by_scope) == 5
    for name, meta in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == meta["sha256"]
    vectors = np.load(folder / "embeddings.npy")
    ids = np.load(folder / "embedding_ids.npy")
    assert vectors.dtype == np.float32 and vectors.shape == (12, 384) and ids.dtype == np.int64
    blob = (
        filled.db.connection()
        .execute("SELECT embedding FROM entries WHERE id = ?", (int(ids[3]),))
        .fetchone()[0]
    )
    assert np.frombuffer(blob, dtype="<f4").tolist() == vectors[3].tolist()
    cancel = next(r for r in rows if r["prompt"] == "Cancel my subscription" and r["hits"])
    assert cancel["hits"] == 2 and cancel["last_hit_at"] >= cancel["created_at"]
    assert json.loads(cancel["usage_json"])["total_tokens"] == 7
    assert verify_export(folder)["format_version"] == export_mod.EXPORT_VERSION


def test_exported_index_is_searchable_with_plain_faiss(
    filled: SemanticCache, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    folder = tmp_path / "out"
    export(filled, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    by_id = {r["id"]: r for r in records(folder)}
    answer = '{"text":"cancel my subscription"}'
    cancel = next(r for r in by_id.values() if r["response_json"] == answer)
    scope = manifest["scopes"][cancel["scope"]]
    index = faiss.read_index(str(folder / scope["index"]))
    assert index.ntotal == scope["embedded"] == 5
    sims, ids = index.search(embedder.embed(["Please cancel my subscription"]), 2)
    assert by_id[int(ids[0][0])]["prompt"] == "Cancel my subscription"
    assert 0.85 < sims[0][0] <= 1.0 and sims[0][1] < sims[0][0]


def test_round_trip_is_lossless_and_serves_the_same_hits(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    export(filled, tmp_path / "a")
    report = import_export(tmp_path / "a", target)
    assert (report.imported, report.duplicates, report.re_embedded) == (13, 0, 0)
    assert report.exact_only == 1 and report.dropped_columns == []
    export(target, tmp_path / "b")

    a, b = records(tmp_path / "a"), records(tmp_path / "b")
    assert [report.id_map[r["id"]] for r in a] == [r["id"] for r in b]
    assert [{**r, "id": 0} for r in a] == [{**r, "id": 0} for r in b]
    vectors_a, vectors_b = (np.load(tmp_path / d / "embeddings.npy") for d in "ab")
    assert np.array_equal(vectors_a, vectors_b)
    ids_a, ids_b = (np.load(tmp_path / d / "embedding_ids.npy") for d in "ab")
    assert [report.id_map[int(i)] for i in ids_a] == ids_b.tolist()
    man_a, man_b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in "ab")
    assert man_a["scopes"] == man_b["scopes"] and man_a["embedder"] == man_b["embedder"]

    semantic = 0
    for system in (None, SYSTEM):
        for query in QUERIES:
            hit_a = filled.lookup(msgs(query, system), Ticket, model=MODEL)
            hit_b = target.lookup(msgs(query, system), Ticket, model=MODEL)
            assert (hit_a is None) == (hit_b is None), query
            if hit_a is not None and hit_b is not None:
                # model_dump: == on two served values recurses through the attached CacheHit
                assert (hit_a.tier, hit_a.value.model_dump()) == (
                    hit_b.tier,
                    hit_b.value.model_dump(),
                )
                assert report.id_map[hit_a.entry_id] == hit_b.entry_id
                assert hit_b.similarity == pytest.approx(hit_a.similarity, abs=1e-6)
                semantic += hit_a.tier == "semantic"
    assert semantic >= 4  # the paraphrases really went through the semantic tier
    assert target.lookup(image_msgs("what is in this picture"), Ticket, model=MODEL) is not None
    assert target.lookup(msgs("Order A-1 please"), Order, model="gpt-4o") is not None


def interrupt_bar(
    monkeypatch: pytest.MonkeyPatch, module: types.ModuleType, desc: str, after: int
) -> None:
    """Make the progress loop named ``desc`` in ``module`` raise KeyboardInterrupt after
    ``after`` items."""
    real = module.bar

    def bar(items: Any, progress: Any, **kwargs: Any) -> Any:
        if kwargs.get("desc") != desc:
            return real(items, progress, **kwargs)

        def interrupted() -> Iterator[Any]:
            for i, item in enumerate(items):
                if i == after:
                    raise KeyboardInterrupt
                yield item

        return interrupted()

    monkeypatch.setattr(module, "bar", bar)


def test_interrupted_export_leaves_no_folder(
    filled: SemanticCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exports").mkdir()
    interrupt_bar(monkeypatch, export_mod, "export", after=3)
    with pytest.raises(KeyboardInterrupt):
        export(filled, tmp_path / "exports" / "a")
    assert list((tmp_path / "exports").iterdir()) == []
    # the read snapshot was released: the cache still writes
    assert filled.store(msgs("after"), Ticket, Ticket(text="x"), model=MODEL) is not None


def test_export_never_overwrites_other_folders(filled: SemanticCache, tmp_path: Path) -> None:
    export(filled, tmp_path / "a")
    with pytest.raises(SemcacheError, match="is an export"):
        export(filled, tmp_path / "a")
    filled.store(msgs("one more"), Ticket, Ticket(text="x"), model=MODEL)
    assert export(filled, tmp_path / "a", overwrite=True).entries == 14
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SemcacheError, match="non-empty folder"):
        export(filled, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_empty_cache_exports_and_imports(
    cache: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    report = export(cache, tmp_path / "a")
    assert (report.entries, report.embedded, report.scopes) == (0, 0, 0)
    assert import_export(tmp_path / "a", target).imported == 0
