"""Export and import move a cache between SQLite and PostgreSQL, in both directions."""

from __future__ import annotations

from pathlib import Path

from semcache import SemanticCache
from semcache.ops import engines
from semcache.storage.postgres import rows

from .fleet_node import Answer, open_node, paraphrase, question
from .pgserver import HashEmbedder


def file_cache(path: Path) -> SemanticCache:
    return SemanticCache(path, embedder=HashEmbedder(), verifier=None, threshold=0.9)


def assert_serves(cache: SemanticCache, items: range) -> None:
    for item in items:
        for messages in (question(item), paraphrase(item)):
            hit = cache.lookup(messages, Answer, model="m")
            assert hit is not None and hit.value.text == f"answer {item}", item


def test_sqlite_to_postgresql_and_back(pg_dsn: str, tmp_path: Path) -> None:
    with file_cache(tmp_path / "a.db") as source:
        for item in range(6):
            source.store(question(item), Answer, Answer(text=f"answer {item}"), model="m")
        source.store(question(99), Answer, Answer(text="exact only"), model="m", ttl=3600)
        source.set_threshold(0.95, response_model=Answer)
        source.export(tmp_path / "from-sqlite")
    with open_node(pg_dsn) as fleet, open_node(pg_dsn) as other_node:
        fleet.store(question(0), Answer, Answer(text="answer 0"), model="m")  # already there
        report = fleet.import_export(tmp_path / "from-sqlite")
        assert (report.imported, report.duplicates, report.thresholds) == (6, 1, 1)
        assert len(report.id_map) == 6 and len(fleet) == 7
        assert other_node.thresholds() == {} and other_node.pipeline.store.thresholds()
        other_node.set_threshold(None, response_model=Answer)
        assert_serves(other_node, range(6))  # its replica learned the imported rows
        again = fleet.import_export(tmp_path / "from-sqlite")
        assert (again.imported, again.duplicates) == (0, 7)
        exported = fleet.export(tmp_path / "from-postgres")
        assert exported.entries == 7 and exported.embedded == 7
    with file_cache(tmp_path / "b.db") as target:
        back = target.import_export(tmp_path / "from-postgres")
        assert back.imported == 7
        assert_serves(target, range(6))


def test_the_copy_columns_are_the_postgresql_tables() -> None:
    assert rows.TABLES["entries"] == engines._COPY_COLUMNS
