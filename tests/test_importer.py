"""Import: duplicates, filters, re-embedding, extra columns, thresholds, the instructor_cache
table, and refusal of damaged or interrupted imports without touching the target."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import semcache.ops.export as export_mod
import semcache.ops.importer as importer_mod
from semcache import SemanticCache, SemcacheError
from semcache.embedding import SentenceTransformerEmbedder
from semcache.errors import ExportError
from semcache.integrations.instructor_cache import SQLiteCache, instructor_cache_stats
from semcache.ops.export import export
from semcache.ops.importer import import_export

from .corpus import MODEL, Order, Ticket, count, msgs, records
from .test_export import interrupt_bar


def test_the_first_import_path_still_works() -> None:
    """``semcache.ops.export`` was where import_export lived first; SemanticCache uses it there."""
    assert export_mod.import_export is import_export
    assert export_mod.ImportReport is importer_mod.ImportReport
    assert export_mod.ExportError is ExportError


def test_import_twice_skips_duplicates(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    export(filled, tmp_path / "a")
    import_export(tmp_path / "a", target)
    again = import_export(tmp_path / "a", target)
    assert (again.imported, again.duplicates) == (0, 13) and count(target) == 13


def test_import_filters_by_scope_namespace_and_age(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    with filled.db.transaction() as conn:  # make the Order entry a month old
        conn.execute(
            "UPDATE entries SET created_at = created_at - 30 * 86400 WHERE model = 'gpt-4o'"
        )
    export(filled, tmp_path / "a")
    rows = records(tmp_path / "a")
    order_scope = next(r["scope"] for r in rows if r["model"] == "gpt-4o")

    only_b = import_export(tmp_path / "a", target, namespaces=["tenant-b"])
    assert (only_b.imported, only_b.filtered) == (1, 12)
    recent = import_export(tmp_path / "a", target, newer_than=7 * 86400)
    assert recent.imported == 11 and recent.duplicates == 1 and recent.filtered == 1
    by_scope = import_export(tmp_path / "a", target, scopes=[order_scope[:12]])
    assert by_scope.imported == 1 and count(target) == 13
    assert target.lookup(msgs("Order A-1 please"), Order, model="gpt-4o") is not None


class Renamed:
    """The bundled model under another name: forces a re-embed, and records the batches."""

    name = "test/renamed-minilm"

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.batches: list[list[str]] = []

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    def embed(self, texts: Any) -> np.ndarray:
        self.batches.append(list(texts))
        return self.inner.embed(texts)

    def fits(self, text: str) -> bool:
        return self.inner.fits(text)


def test_import_re_embeds_for_another_embedder(
    filled: SemanticCache, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    export(filled, tmp_path / "a")
    renamed = Renamed(embedder)
    with SemanticCache(tmp_path / "other.db", threshold=0.85, embedder=renamed) as other:
        report = import_export(tmp_path / "a", other, batch_size=5, progress=True)
        assert report.re_embedded == 12 and report.exact_only == 1
        assert [len(b) for b in renamed.batches] == [5, 5, 2]
        prompts = [r["prompt"] for r in records(tmp_path / "a") if r["prompt"] is not None]
        assert sorted(t for b in renamed.batches for t in b) == sorted(prompts)
        assert other.db.settings()["embedder_name"] == "test/renamed-minilm"
        hit = other.lookup(msgs("Please cancel my subscription"), Ticket, model=MODEL)
        assert hit is not None and hit.tier == "semantic"
        assert hit.value == Ticket(text="cancel my subscription")


def test_export_carries_columns_it_does_not_know(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path, embedder: Any
) -> None:
    for c in (filled, target):
        with c.db.transaction() as conn:
            conn.execute("ALTER TABLE entries ADD COLUMN note TEXT")
            conn.execute("ALTER TABLE entries ADD COLUMN extra BLOB")
    with filled.db.transaction() as conn:
        conn.execute("UPDATE entries SET note = 'kept: ' || id, extra = x'00ff10'")
    export(filled, tmp_path / "a")
    import_export(tmp_path / "a", target)
    rows = target.db.connection().execute("SELECT DISTINCT extra, substr(note, 1, 6) FROM entries")
    assert rows.fetchall() == [(b"\x00\xff\x10", "kept: ")]
    with SemanticCache(tmp_path / "plain.db", embedder=embedder) as plain:
        report = import_export(tmp_path / "a", plain)
        assert report.imported == 13 and report.dropped_columns == ["note", "extra"]


def test_thresholds_travel_with_the_export(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    tables = {r[0] for r in filled.db.connection().execute("SELECT name FROM sqlite_master")}
    if "thresholds" not in tables:
        pytest.skip("this store has no thresholds table")
    with filled.db.transaction() as conn:
        scope = conn.execute("SELECT scope FROM entries WHERE model = 'gpt-4o'").fetchone()[0]
        for name, value in ((f"scope:{scope}", 0.97), ("schema:Ticket", 0.93), ("scope:gone", 0.5)):
            conn.execute("INSERT INTO thresholds VALUES (?, ?, 'test', 1.0)", (name, value))
    export(filled, tmp_path / "a")
    report = import_export(tmp_path / "a", target, scopes=[scope[:12]])
    assert report.thresholds == 2  # the imported scope's and the schema's, not another scope's
    found = dict(target.db.connection().execute("SELECT target, threshold FROM thresholds"))
    assert found == {f"scope:{scope}": 0.97, "schema:Ticket": 0.93}


def damage(kind: str, folder: Path) -> None:
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if kind == "flipped byte":
        data = bytearray((folder / "entries.jsonl").read_bytes())
        data[100] ^= 0x01
        (folder / "entries.jsonl").write_bytes(bytes(data))
    elif kind == "truncated vectors":
        data = (folder / "embeddings.npy").read_bytes()
        (folder / "embeddings.npy").write_bytes(data[: len(data) // 2])
    elif kind == "missing index":
        shutil.rmtree(folder / "indexes")
    elif kind == "no manifest":
        manifest_path.unlink()
    elif kind == "future version":
        manifest["format_version"] = 99
        manifest_path.write_text(json.dumps(manifest))
    elif kind == "unlisted data file":
        del manifest["files"]["entries.jsonl"]
        manifest_path.write_text(json.dumps(manifest))
    elif kind == "bad line, good checksum":
        path = folder / "entries.jsonl"
        path.write_text(path.read_text() + "{not json\n")
        manifest["files"]["entries.jsonl"] = {
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "bytes": path.stat().st_size,
        }
        manifest_path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "kind",
    [
        "flipped byte",
        "truncated vectors",
        "missing index",
        "no manifest",
        "future version",
        "unlisted data file",
        "bad line, good checksum",
    ],
)
def test_damaged_export_is_refused_and_changes_nothing(
    kind: str, filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    target.store(msgs("already here"), Ticket, Ticket(text="mine"), model=MODEL)
    settings_before = target.db.settings()
    export(filled, tmp_path / "a")
    damage(kind, tmp_path / "a")
    with pytest.raises(ExportError) as info:
        import_export(tmp_path / "a", target)
    assert isinstance(info.value, SemcacheError) and isinstance(info.value, ValueError)
    assert str(tmp_path / "a") in str(info.value)
    assert count(target) == 1 and target.db.settings() == settings_before


def test_interrupted_import_leaves_the_target_as_it_was(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export(filled, tmp_path / "a")
    target.store(msgs("already here"), Ticket, Ticket(text="mine"), model=MODEL)
    interrupt_bar(monkeypatch, importer_mod, "import", after=5)
    with pytest.raises(KeyboardInterrupt):
        import_export(tmp_path / "a", target)
    assert count(target) == 1
    monkeypatch.undo()  # the cache is still usable, and a retry completes
    assert import_export(tmp_path / "a", target).imported == 13 and count(target) == 14


def test_interrupted_re_embed_writes_nothing(
    filled: SemanticCache, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    export(filled, tmp_path / "a")
    renamed = Renamed(embedder)
    real_embed = renamed.embed

    def embed(texts: Any) -> np.ndarray:
        if renamed.batches:
            raise KeyboardInterrupt
        return real_embed(texts)

    renamed.embed = embed  # type: ignore[method-assign]
    with SemanticCache(tmp_path / "other.db", embedder=renamed) as other:
        with pytest.raises(KeyboardInterrupt):
            import_export(tmp_path / "a", other, batch_size=4)
        assert count(other) == 0


def instructor_rows(cache: SemanticCache) -> list[tuple[Any, ...]]:
    conn = cache.db.connection()
    return conn.execute(
        "SELECT key, value, created_at, expires_at, hits FROM instructor_cache ORDER BY key"
    ).fetchall()


def tables(cache: SemanticCache) -> set[str]:
    return {r[0] for r in cache.db.connection().execute("SELECT name FROM sqlite_master")}


def fill_instructor_cache(cache: SemanticCache) -> None:
    """Three rows of instructor's cache= table: one kept forever, one with a TTL, one expired."""
    with SQLiteCache(cache) as instructor:
        instructor.set("forever", '{"name": "Jason", "age": 25}')
        instructor.set("a day", '{"name": "Ann", "age": 31}', ttl=86400)
        instructor.set("gone", '{"name": "Old", "age": 99}', ttl=60)
        assert instructor.get("forever") is not None  # one hit on the first row
    with cache.db.transaction() as conn:
        conn.execute("UPDATE instructor_cache SET expires_at = 1.0 WHERE key = 'gone'")


def test_instructor_cache_round_trip(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    fill_instructor_cache(filled)
    report = export(filled, tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert report.instructor_cache == manifest["instructor_cache"] == 3
    listed = manifest["files"]["instructor_cache.jsonl"]
    data = (tmp_path / "a" / "instructor_cache.jsonl").read_bytes()
    assert listed == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    exported = [json.loads(line) for line in data.decode().splitlines()]
    assert [r["key"] for r in exported] == ["forever", "a day", "gone"]

    assert "instructor_cache" not in tables(target)
    imported = import_export(tmp_path / "a", target)
    assert imported.instructor_cache == 3 and imported.imported == 13
    assert instructor_rows(target) == instructor_rows(filled)  # values, times, expires_at, hits
    export(target, tmp_path / "b")
    assert (tmp_path / "b" / "instructor_cache.jsonl").read_bytes() == data  # lossless
    with SQLiteCache(target) as copy:
        assert copy.get("forever") == '{"name": "Jason", "age": 25}'
        assert copy.get("a day") == '{"name": "Ann", "age": 31}'
        assert copy.get("gone") is None  # expired in the source, expired in the copy


def test_instructor_cache_rows_are_added_by_key(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    fill_instructor_cache(filled)
    export(filled, tmp_path / "a")
    with SQLiteCache(target) as mine:
        mine.set("forever", '{"name": "Mine", "age": 1}')
    report = import_export(tmp_path / "a", target)
    assert report.instructor_cache == 2  # "forever" was already there: the target's value stays
    values = {row[0]: row[1] for row in instructor_rows(target)}
    assert values == {
        "forever": '{"name": "Mine", "age": 1}',
        "a day": '{"name": "Ann", "age": 31}',
        "gone": '{"name": "Old", "age": 99}',
    }
    assert import_export(tmp_path / "a", target).instructor_cache == 0
    numbers = instructor_cache_stats(target.db)  # the hit and miss counters stay with the source
    assert (numbers.entries, numbers.expired, numbers.hits, numbers.misses) == (2, 1, 0, 0)


def test_instructor_cache_rows_and_import_filters(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    fill_instructor_cache(filled)
    with filled.db.transaction() as conn:  # stored a month ago
        conn.execute("UPDATE instructor_cache SET created_at = created_at - 30 * 86400")
        conn.execute("UPDATE instructor_cache SET created_at = 0 WHERE key = 'gone'")
    export(filled, tmp_path / "a")
    # Their keys carry no scope or namespace: a tenant filter must not pull them in.
    by_namespace = import_export(tmp_path / "a", target, namespaces=["tenant-b"])
    assert by_namespace.imported == 1 and by_namespace.instructor_cache == 0
    assert "instructor_cache" not in tables(target)
    recent = import_export(tmp_path / "a", target, newer_than=7 * 86400)
    assert recent.instructor_cache == 0 and "instructor_cache" not in tables(target)
    everything = import_export(tmp_path / "a", target, newer_than=365 * 86400)
    assert everything.instructor_cache == 2  # not "gone", created in 1970


def test_without_an_instructor_cache_table_nothing_is_created(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path
) -> None:
    report = export(filled, tmp_path / "a")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert report.instructor_cache == 0 and manifest["instructor_cache"] is None
    assert not (tmp_path / "a" / "instructor_cache.jsonl").exists()
    assert import_export(tmp_path / "a", target).instructor_cache == 0
    assert "instructor_cache" not in tables(target)


def test_interrupted_import_creates_no_instructor_cache_table(
    filled: SemanticCache, target: SemanticCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill_instructor_cache(filled)
    export(filled, tmp_path / "a")
    (tmp_path / "a" / "instructor_cache.jsonl").write_text('{"key": 1}\n')
    with pytest.raises(ExportError, match="checksum"):
        import_export(tmp_path / "a", target)
    export(filled, tmp_path / "b")
    interrupt_bar(monkeypatch, importer_mod, "import", after=5)
    with pytest.raises(KeyboardInterrupt):
        import_export(tmp_path / "b", target)
    assert count(target) == 0 and "instructor_cache" not in tables(target)
