"""SemanticCache on PostgreSQL: the same API and features as on a SQLite file, on a real server."""

from __future__ import annotations

import logging
import time
from typing import Any

import instructor
import psycopg
import pytest
from pydantic import BaseModel

from semcache import ConfigMismatchError, SemanticCache, UsageError, cache_hit
from semcache.storage.postgres import migrations

from .conftest import FakeProvider, openai_client, readme_block
from .pgserver import HashEmbedder, admin, dsn_for, private_schema, require_server


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def pg_cache(pg_dsn: str, embedder: Any) -> Any:
    with SemanticCache(pg_dsn, threshold=0.85, embedder=embedder, audit=True) as cache:
        yield cache


def test_both_tiers_through_a_wrapped_client(pg_cache: SemanticCache) -> None:
    provider = FakeProvider()
    client = pg_cache.wrap(instructor.from_openai(openai_client(provider)))
    first = client.create(model="m", response_model=Answer, messages=user("Cancel my subscription"))
    again = client.create(model="m", response_model=Answer, messages=user("Cancel my subscription"))
    near = client.create(
        model="m", response_model=Answer, messages=user("Please cancel my subscription")
    )
    other = client.create(model="m", response_model=Answer, messages=user("Where is my parcel?"))
    assert provider.count == 2 and first.text == "Cancel my subscription"
    assert cache_hit(again) is not None and cache_hit(again).tier == "exact"  # type: ignore[union-attr]
    hit = cache_hit(near)
    assert hit is not None and hit.tier == "semantic" and near.text == "Cancel my subscription"
    assert other.text == "Where is my parcel?"
    pg_cache.flush()
    stats = pg_cache.stats()
    assert (stats.entries, stats.exact_hits, stats.semantic_hits, stats.misses) == (2, 1, 1, 2)
    assert stats.tokens_avoided > 0 and stats.store_outages == 0 and len(pg_cache) == 2


def test_scopes_namespaces_and_a_second_node(pg_dsn: str, embedder: Any) -> None:
    with (
        SemanticCache(pg_dsn, embedder=embedder) as a,
        SemanticCache(pg_dsn, embedder=embedder) as b,
        SemanticCache(pg_dsn, embedder=embedder, namespace="tenant-2") as c,
    ):
        a.store(user("Where is my parcel?"), Answer, Answer(text="tracking"), model="m")
        hit = b.lookup(user("where's my parcel"), Answer, model="m")
        assert hit is not None and hit.value.text == "tracking" and hit.tier == "semantic"
        assert b.lookup(user("Where is my parcel?"), Answer, model="other") is None  # scope
        assert c.lookup(user("Where is my parcel?"), Answer, model="m") is None  # namespace


def test_ttl_and_max_entries(pg_dsn: str, embedder: Any) -> None:
    with SemanticCache(pg_dsn, embedder=embedder, max_entries=2) as cache:
        cache.store(user("Short lived"), Answer, Answer(text="x"), model="m", ttl=0.05)
        time.sleep(0.1)
        assert cache.lookup(user("Short lived"), Answer, model="m") is None
        for text in ("One", "Two", "Three"):
            cache.store(user(text), Answer, Answer(text=text), model="m")
        assert len(cache) == 2
        assert cache.lookup(user("Three"), Answer, model="m") is not None


def test_thresholds_feedback_and_audit_are_shared(pg_dsn: str, embedder: Any) -> None:
    with (
        SemanticCache(pg_dsn, embedder=embedder, audit=True) as a,
        SemanticCache(pg_dsn, embedder=embedder) as b,
    ):
        a.set_threshold(0.99, response_model=Answer)
        assert b.thresholds() == {} and b.pipeline.store.thresholds()
        a.set_threshold(None, response_model=Answer)
        a.store(user("Cancel my subscription"), Answer, Answer(text="cancel"), model="m")
        hit = a.lookup(user("Please cancel my subscription"), Answer, model="m")
        assert hit is not None
        a.mark_wrong(hit)
        assert b.lookup(user("Please cancel my subscription"), Answer, model="m") is None
        assert b.lookup(user("Cancel my subscription"), Answer, model="m") is not None
        a.flush()
        with admin() as conn:
            schema = pg_dsn.split("%3D")[1].split("&")[0]
            verdicts = conn.execute(f"SELECT verdict FROM {schema}.audit").fetchall()
        assert ("hit",) in verdicts


def test_store_many_and_memoize(pg_cache: SemanticCache) -> None:
    ids = pg_cache.store_many(
        [(user(f"Question number {i}"), Answer(text=str(i))) for i in range(40)],
        Answer,
        model="m",
        batch_size=16,
    )
    assert len(ids) == 40 and None not in ids and len(pg_cache) == 40
    calls: list[str] = []

    @pg_cache.memoize(text="question")
    def answer(question: str) -> Answer:
        calls.append(question)
        return Answer(text=question.upper())

    assert answer("How do I reset my password?").text == "HOW DO I RESET MY PASSWORD?"
    assert answer("How can I reset my password?").text == "HOW DO I RESET MY PASSWORD?"
    assert len(calls) == 1


def test_maintenance_on_postgres_says_it_needs_a_file(pg_cache: SemanticCache) -> None:
    with pytest.raises(UsageError, match="SQLite"):
        _ = pg_cache.db


def test_migrations_are_versioned_and_a_newer_schema_is_refused(pg_dsn: str) -> None:
    with SemanticCache(pg_dsn, embedder=HashEmbedder()):
        pass
    schema = pg_dsn.split("%3D")[1].split("&")[0]
    with admin() as conn:
        rows = conn.execute(f"SELECT version FROM {schema}.schema_migrations").fetchall()
        assert rows == [(number,) for number, _, _ in migrations.MIGRATIONS]
        with SemanticCache(pg_dsn, embedder=HashEmbedder()):
            pass  # reopening applies nothing twice
        conn.execute(
            f"INSERT INTO {schema}.schema_migrations (version, description) VALUES (99, 'x')"
        )
    with pytest.raises(ConfigMismatchError, match="version 99"):
        SemanticCache(pg_dsn, embedder=HashEmbedder())


def test_another_embedder_is_refused(pg_dsn: str, embedder: Any) -> None:
    with SemanticCache(pg_dsn, embedder=HashEmbedder()):
        pass
    with pytest.raises(ConfigMismatchError, match="embedder"):
        SemanticCache(pg_dsn, embedder=embedder)


def test_the_password_never_appears_in_logs_errors_reprs_or_stats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_server()
    secret = "pw-Secret-4711"
    caplog.set_level(logging.DEBUG)  # every logger, psycopg's included
    seen: list[str] = []
    with private_schema() as schema:
        dsn = dsn_for(schema, password=secret)  # trust auth ignores it; libpq still sends it
        with SemanticCache(dsn, embedder=HashEmbedder()) as cache:
            cache.store(user("hello"), Answer, Answer(text="hi"), model="m")
            assert cache.lookup(user("hello"), Answer, model="m") is not None
            seen += [repr(cache.pipeline.store), str(cache.stats()), repr(cache.settings)]
            with pytest.raises(UsageError) as caught:
                _ = cache.db
            seen.append(str(caught.value))
    # An unreachable server: the error (and anything it chains) must not quote the password.
    down = f"postgresql://postgres:{secret}@127.0.0.1:1/test"
    with pytest.raises(Exception) as failed:
        SemanticCache(down, embedder=HashEmbedder())
    error: BaseException | None = failed.value
    while error is not None:
        seen.append(f"{error!r} {error}")
        error = error.__cause__ or error.__context__
    with SemanticCache(down, embedder=HashEmbedder(), fail_open=True) as disabled:
        seen += [str(disabled.disabled), repr(disabled.pipeline.store)]
    seen += [record.getMessage() for record in caplog.records]
    assert "***" in " ".join(seen)
    assert not [text for text in seen if secret in text]


def test_the_readme_grants_are_enough_for_an_app_role(pg_dsn: str, embedder: Any) -> None:
    """The owner migrates; a role with only README's GRANTs runs the cache, and cannot do DDL."""
    schema = pg_dsn.split("%3D")[1].split("&")[0]
    role = f"{schema}_app"
    with SemanticCache(pg_dsn, embedder=embedder) as owner:  # migrates, records settings
        owner.store(user("Cancel my subscription"), Answer, Answer(text="cancel"), model="m")
    grants = [
        line.replace("semcache_app", role).replace("SCHEMA semcache ", f"SCHEMA {schema} ")
        for line in readme_block("Running a fleet", "sql").splitlines()
        if line.startswith("GRANT")
    ]
    assert len(grants) == 3
    with admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        try:
            for grant in grants:
                conn.execute(grant)
            app_dsn = pg_dsn.replace("postgres@", f"{role}@", 1)
            with SemanticCache(app_dsn, embedder=embedder, audit=True, max_entries=2) as app:
                hit = app.lookup(user("Please cancel my subscription"), Answer, model="m")
                assert hit is not None and hit.value.text == "cancel"
                for text in ("One", "Two", "Three"):
                    app.store(user(text), Answer, Answer(text=text), model="m")
                app.set_threshold(0.9, scope=hit.scope)
                app.mark_wrong(hit)
                assert app.stats().entries == 2
            with psycopg.connect(app_dsn) as restricted, pytest.raises(psycopg.Error):
                restricted.execute(f"CREATE TABLE {schema}.intruder (x int)")
        finally:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_near_miss_labels_and_threshold_changes_are_shared(pg_dsn: str, embedder: Any) -> None:
    """Labels one node takes and thresholds it changes are what every node calibrates from."""
    stored, near = "How do I reset my password?", "I forgot my password, how can I reset it?"
    rival = "I forgot my password, what do I do?"  # less similar, another answer: the rival
    va, vb, vr = embedder.embed([stored, near, rival])
    gap, rival_gap = float(va @ vb), float(vb @ vr)
    assert gap - 0.05 < rival_gap < gap
    with (
        SemanticCache(pg_dsn, embedder=embedder, threshold=gap + 0.02, verifier=None) as a,
        SemanticCache(pg_dsn, embedder=embedder, threshold=gap + 0.02, verifier=None) as b,
    ):
        a.store(user(stored), Answer, Answer(text="reset"))
        a.store(user(rival), Answer, Answer(text="rival"))
        assert a.lookup(user(near), Answer) is None
        a.store(user(near), Answer, Answer(text="other"))
        a.flush()
        (label,) = b._store.labels()
        assert (label.source, label.correct, label.stage) == ("near_miss", False, "")
        assert label.similarity == pytest.approx(gap, abs=1e-5)
        assert label.rival == pytest.approx(rival_gap, abs=1e-5)
        a.set_threshold(0.93, response_model=Answer)
        a.set_threshold(0.95, response_model=Answer)
        changes = b.stats().threshold_changes
        assert [(c.old, c.new) for c in changes[:2]] == [(0.93, 0.95), (None, 0.93)]
        assert b._store.trim_log("near_misses", older_than=None, max_rows=0) == 1
        assert b._store.labels() == []
        with pytest.raises(UsageError, match="not a log table"):
            b._store.trim_log("entries", older_than=None, max_rows=0)
