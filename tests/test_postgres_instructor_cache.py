"""instructor's ``cache=`` adapter on PostgreSQL: the table comes from migration 3, every node of a
fleet shares it, and export/import carry its rows between the engines in both directions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import instructor
import pytest

from semcache.errors import UsageError
from semcache.integrations.instructor_cache import InstructorCacheStats, SQLiteCache
from semcache.storage.postgres import PostgresStore, migrations

from .conftest import FakeProvider, openai_client
from .fleet_node import open_node
from .pgserver import admin
from .test_instructor_cache import Answer, FakeClock


def ask(client: Any, text: str) -> Any:
    return client.create(
        model="gpt-4o-mini",
        response_model=Answer,
        messages=[{"role": "user", "content": text}],
        cache_namespace="users",
    )


def schema_of(dsn: str) -> str:
    return dsn.split("%3D")[1].split("&")[0]


def test_two_nodes_share_answers_through_instructor(pg_dsn: str, provider: FakeProvider) -> None:
    with SQLiteCache(pg_dsn) as one, SQLiteCache(pg_dsn) as two:
        first = instructor.from_openai(openai_client(provider), cache=one)
        second = instructor.from_openai(openai_client(provider), cache=two)
        assert ask(first, "Jason is 25").text == "Jason is 25"
        assert ask(second, "Jason is 25").text == "Jason is 25"  # the other node's answer
        assert provider.count == 1
        assert ask(second, "Ada is 36").text == "Ada is 36" and provider.count == 2
        assert one.stats() == InstructorCacheStats(entries=2, expired=0, hits=1, misses=2)
        assert len(two) == 2


def test_ttl_delete_clear_and_a_shared_semantic_cache(pg_dsn: str) -> None:
    clock = FakeClock()
    with open_node(pg_dsn) as cache, SQLiteCache(cache, clock=clock) as icache:
        assert icache.db is cache.pipeline.store  # borrowed: the cache's own connections
        icache.set("hour", '{"a": 1}', ttl=3600)
        icache.set("forever", '{"a": 2}')
        icache.set("pickle", b"\x80\x04.")  # not JSON: refused
        assert icache.get("hour") == '{"a": 1}' and "forever" in icache and "pickle" not in icache
        clock.now += 3601
        assert icache.get("hour") is None and "hour" not in icache  # expired: never served
        assert icache.stats() == InstructorCacheStats(entries=1, expired=0, hits=1, misses=1)
        icache.set("gone", '{"a": 3}', ttl=10)
        clock.now += 11
        assert icache.expire() == 1
        assert icache.delete("forever") and not icache.delete("forever")
        icache.set("x", '"y"')
        assert icache.clear() == 1 and len(icache) == 0
        assert len(cache) == 0  # the semantic cache's entries are another table
    with pytest.raises(UsageError):
        SQLiteCache(42)  # type: ignore[arg-type]


def test_a_down_server_is_a_miss_and_a_dropped_write(
    pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    with SQLiteCache(pg_dsn) as icache:
        icache.set("k", '{"a": 1}')
    down = "postgresql://postgres:pw-Down-55@127.0.0.1:1/test"
    with pytest.raises(Exception, match="unreachable") as info:
        SQLiteCache(down)
    assert "pw-Down-55" not in str(info.value)
    with SQLiteCache(pg_dsn) as icache:
        store = icache.db
        assert isinstance(store, PostgresStore)
        store.close()  # every later call fails: get is a miss, set drops the value
        caplog.set_level(logging.WARNING, logger="semcache")
        assert icache.get("k") is None
        icache.set("k2", '{"a": 2}')
    assert len([r for r in caplog.records if "instructor cache" in r.getMessage()]) == 2


def test_migration_3_adds_the_table_to_a_version_2_schema(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:  # a database an earlier semcache created
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
        patch.setattr(migrations, "LATEST", 2)
        PostgresStore(pg_dsn).close()
    schema = schema_of(pg_dsn)
    with admin() as conn:
        assert conn.execute(f"SELECT max(version) FROM {schema}.schema_migrations").fetchone() == (
            2,
        )
        assert conn.execute(
            "SELECT to_regclass(%s)", (f"{schema}.instructor_cache",)
        ).fetchone() == (None,)
    with SQLiteCache(pg_dsn) as icache:  # opening migrates
        icache.set("k", '{"a": 1}')
        assert icache.get("k") == '{"a": 1}'
    with admin() as conn:
        versions = conn.execute(f"SELECT version FROM {schema}.schema_migrations ORDER BY 1")
        assert [v for (v,) in versions] == [n for n, _, _ in migrations.MIGRATIONS]


def test_export_and_import_carry_the_rows_both_ways(pg_dsn: str, tmp_path: Path) -> None:
    clock = FakeClock()
    clock.now = 4_000_000_000.0  # far ahead: nothing the test writes expires on a real clock
    with open_node(str(tmp_path / "a.db")) as source, SQLiteCache(source, clock=clock) as ic:
        ic.set("forever", '{"name": "Jason"}')
        ic.set("hour", '{"name": "Ada"}', ttl=3600)
        assert ic.get("hour") is not None
        source.export(tmp_path / "from-sqlite")
    with open_node(pg_dsn) as fleet:
        with SQLiteCache(fleet) as ic:
            ic.set("forever", '{"name": "kept"}')  # a key the database holds keeps its value
        report = fleet.import_export(tmp_path / "from-sqlite")
        assert report.instructor_cache == 1
        with SQLiteCache(fleet, clock=clock) as ic:
            assert ic.get("forever") == '{"name": "kept"}'
            assert ic.get("hour") == '{"name": "Ada"}'
        assert fleet.import_export(tmp_path / "from-sqlite").instructor_cache == 0
        exported = fleet.export(tmp_path / "from-postgres")
        assert exported.instructor_cache == 2
    with open_node(str(tmp_path / "b.db")) as target:
        assert target.import_export(tmp_path / "from-postgres").instructor_cache == 2
        with SQLiteCache(target, clock=clock) as ic:
            assert ic.get("forever") == '{"name": "kept"}' and ic.get("hour") == '{"name": "Ada"}'
            rows = ic.db.connection().execute(  # type: ignore[attr-defined]
                "SELECT key, expires_at, hits FROM instructor_cache ORDER BY key"
            )
            (forever, hour) = rows.fetchall()
    assert forever[1] is None and hour[1] == clock.now + 3600
    assert hour[2] == 3  # hits travel with the row: one read on each of the three caches
