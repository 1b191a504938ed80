"""Row-level maintenance: stats, listing, showing, pruning, vacuum, the views, nearest."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from semcache import SemanticCache, SemcacheError, UsageError
from semcache.embedding.resolve import BUNDLED_THRESHOLD
from semcache.integrations.instructor_cache import SQLiteCache
from semcache.ops import admin
from semcache.ops.admin import EntryFilter

from .corpus import MODEL, Ticket, msgs


class ShortTicket(BaseModel):
    """The Ticket schema after a change: answers longer than 12 characters no longer validate."""

    model_config = ConfigDict(title="Ticket")
    text: str = Field(max_length=12)


def ids_of(rows: list[dict[str, Any]]) -> list[int]:
    return [int(r["id"]) for r in rows]


def test_list_filters_and_sorts(filled: SemanticCache) -> None:
    store = filled.db
    everything = admin.list_entries(store, limit=None)
    assert len(everything) == 13
    by_hits = admin.list_entries(store, sort="hits", limit=2)
    assert [r["prompt"] for r in by_hits] == ["Cancel my subscription", "Where is my parcel?"]
    assert [r["hits"] for r in by_hits] == [2, 1]
    recent = admin.list_entries(store, sort="recent", limit=1)[0]
    assert recent["prompt"] == "Where is my parcel?"  # the last one hit
    orders = admin.list_entries(store, EntryFilter(schema_name="Order"))
    assert [(r["model"], r["prompt"]) for r in orders] == [("gpt-4o", "Order A-1 please")]
    tenant = admin.list_entries(store, EntryFilter(namespace="tenant-b"))
    assert len(tenant) == 1 and tenant[0]["namespace"] == "tenant-b"
    scope = orders[0]["scope"]
    assert ids_of(admin.list_entries(store, EntryFilter(scope=scope[:8]))) == ids_of(orders)
    never = admin.list_entries(store, EntryFilter(never_hit=True), limit=None)
    assert len(never) == 11 and all(r["hits"] == 0 for r in never)
    with store.transaction() as conn:
        nine_days_ago = time.time() - 9 * 86400
        conn.execute("UPDATE entries SET created_at = ? WHERE model = 'gpt-4o'", (nine_days_ago,))
    old = admin.list_entries(store, EntryFilter(older_than=admin.parse_duration("7d")))
    assert ids_of(old) == ids_of(orders)
    assert len(admin.list_entries(store, EntryFilter(newer_than=7 * 86400), limit=None)) == 12
    with pytest.raises(UsageError):
        admin.list_entries(store, sort="alphabetical")


def test_show_entry_and_missing_id(filled: SemanticCache) -> None:
    row = admin.list_entries(filled.db, EntryFilter(schema_name="Order"))[0]
    entry = admin.get_entry(filled.db, row["id"])
    assert entry["response_json"] == '{"order_id":"A-1"}' and entry["model"] == "gpt-4o"
    assert entry["embedding"]["dimension"] == 384
    assert entry["embedding"]["norm"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(admin.EntryNotFoundError) as info:
        admin.get_entry(filled.db, 999_999)
    assert isinstance(info.value, SemcacheError) and isinstance(info.value, LookupError)


def test_prune_by_criteria(filled: SemanticCache) -> None:
    store = filled.db
    with pytest.raises(UsageError):
        admin.prune(store, EntryFilter())  # never "delete everything" by omission
    dry = admin.prune(store, EntryFilter(never_hit=True, model=MODEL), dry_run=True)
    assert len(dry) == 10 and store.count() == 13
    deleted = admin.prune(store, EntryFilter(never_hit=True, model=MODEL))
    assert deleted == dry and store.count() == 3
    assert {r["hits"] for r in admin.list_entries(store)} == {0, 1, 2}  # Order keeps its 0
    hit = filled.lookup(msgs("Please cancel my subscription"), Ticket, model=MODEL)
    assert hit is not None and hit.matched_prompt == "Cancel my subscription"
    assert admin.prune(store, EntryFilter(schema_name="Order")) and store.count() == 2


def test_prune_invalid_for_a_changed_schema(filled: SemanticCache) -> None:
    cls = admin.load_model_class("tests.test_admin:ShortTicket")
    assert cls is ShortTicket
    short = [t for t in admin.list_entries(filled.db, limit=None) if t["schema_name"] == "Ticket"]
    deleted = admin.prune(filled.db, EntryFilter(), invalid_for=cls)
    remaining = admin.list_entries(filled.db, limit=None)
    # The five plain answers ("cancel my subscription", ...) are longer than 12 characters;
    # "sys:0".."sys:4", "a cat", "tenant b" and the Order entry (another schema) stay.
    assert len(short) == 12 and len(deleted) == 5 and len(remaining) == 8
    for row in remaining:
        answer = admin.get_entry(filled.db, row["id"])["response_json"]
        if row["schema_name"] == "Ticket":
            ShortTicket.model_validate_json(answer)
    assert "Order" in {r["schema_name"] for r in remaining}
    for spec in ("tests.test_admin", "tests.nope:X", "tests.test_admin:time"):
        with pytest.raises(UsageError):
            admin.load_model_class(spec)


def test_expired_needs_an_expires_at_column(filled: SemanticCache) -> None:
    columns = filled.db.columns("entries")
    if "expires_at" not in columns:
        with pytest.raises(UsageError, match="expires_at"):
            admin.prune(filled.db, EntryFilter(expired=True))
        return
    with filled.db.transaction() as conn:
        conn.execute("UPDATE entries SET expires_at = ? WHERE model = 'gpt-4o'", (time.time() - 1,))
    assert len(admin.prune(filled.db, EntryFilter(expired=True))) == 1
    assert filled.db.count() == 12


def test_vacuum_gives_space_back(filled: SemanticCache) -> None:
    with filled.db.transaction() as conn:  # enough data to free whole pages
        conn.execute("UPDATE entries SET raw_json = ? WHERE model = 'gpt-4o'", ("x" * 400_000,))
    admin.prune(filled.db, EntryFilter(model="gpt-4o"))
    sizes = admin.vacuum(filled.db)
    assert sizes["bytes_before"] - sizes["bytes_after"] > 300_000


def test_views_for_sqlite_users(filled: SemanticCache) -> None:
    """The store creates the views on open; what the README promises sqlite3 users holds."""
    assert filled.db.path is not None
    conn = sqlite3.connect(filled.db.path)
    overview = conn.execute(
        "SELECT prompt, hits, created_at, embedded FROM entries_overview ORDER BY hits DESC LIMIT 1"
    ).fetchone()
    assert overview[:2] == ("Cancel my subscription", 2) and overview[3] == 1
    assert time.strptime(overview[2], "%Y-%m-%d %H:%M:%S")
    per_scope = conn.execute(
        "SELECT entries, hits, tokens_avoided FROM hits_per_scope WHERE schema_name = 'Ticket' "
        "AND namespace = 'default' ORDER BY hits DESC LIMIT 1"
    ).fetchone()
    # the plain Ticket scope: 5 entries, 3 hits; cancel (7 tokens) twice, parcel (8) once
    assert per_scope == (5, 3, 2 * 7 + 8)
    conn.close()


def test_stats_from_sqlite(filled: SemanticCache) -> None:
    numbers = admin.stats(filled.db)
    assert (numbers["entries"], numbers["embedded"], numbers["exact_only"]) == (13, 12, 1)
    assert (numbers["scopes"], numbers["namespaces"]) == (5, 2)
    assert (numbers["exact_hits"], numbers["semantic_hits"], numbers["misses"]) == (2, 1, 0)
    assert numbers["embedder_dimension"] == "384" and numbers["file_bytes"] > 0
    assert numbers["scope_thresholds"] == 0 and "shadow" not in numbers
    assert numbers["default_threshold"] == BUNDLED_THRESHOLD  # the file's model's default
    instructor = {k: v for k, v in numbers.items() if k.startswith("instructor_cache_")}
    assert instructor == dict.fromkeys(
        ["instructor_cache_entries", "instructor_cache_expired", "instructor_cache_hits",
         "instructor_cache_misses"], 0
    )  # fmt: skip
    tables = {r[0] for r in filled.db.connection().execute("SELECT name FROM sqlite_master")}
    assert "instructor_cache" not in tables  # reading the stats created nothing


def test_stats_thresholds_instructor_cache_and_shadow(filled: SemanticCache) -> None:
    scopes = [r["scope"] for r in admin.scopes(filled.db)]
    filled.set_threshold(0.97, scope=scopes[0])
    filled.set_threshold(0.95, scope=scopes[1])
    filled.set_threshold(0.93, response_model=Ticket)  # not a per-scope threshold
    filled.set_threshold(0.91)  # the whole file's
    with SQLiteCache(filled) as instructor:
        instructor.set("live", '{"a": 1}')
        instructor.set("short-lived", '{"a": 2}', ttl=60)
        assert instructor.get("live") == '{"a": 1}' and instructor.get("absent") is None
    with filled.db.transaction() as conn:  # one row past its TTL: counted, never served
        conn.execute("UPDATE instructor_cache SET expires_at = 1 WHERE key = 'short-lived'")
    for agree in (True, True, False):
        filled.db.add_shadow(scopes[0], 1, 0.93, agree, [] if agree else ["text"])
    numbers = admin.stats(filled.db)
    assert numbers["scope_thresholds"] == 2 and numbers["default_threshold"] == 0.91
    assert [numbers[f"instructor_cache_{k}"] for k in ("entries", "expired", "hits", "misses")] == [
        1,
        1,
        1,
        1,
    ]
    assert numbers["shadow"] == {scopes[0]: {"samples": 3, "agreements": 2}}


def test_nearest_reports_similarity_and_verdict(filled: SemanticCache, embedder: Any) -> None:
    tickets = EntryFilter(namespace="default", schema_name="Ticket")
    found = admin.nearest(
        filled.db, embedder, "Please cancel my subscription", threshold=0.85, k=3, flt=tickets
    )
    assert found[0].prompt == "Cancel my subscription" and found[0].verdict == "hit"
    assert found[0].similarity > 0.85 and found[0].similarity >= found[1].similarity
    assert all(n.namespace == "default" and n.schema_name == "Ticket" for n in found)
    assert found[-1].verdict == "miss" and found[-1].similarity < 0.85
    strict = admin.nearest(filled.db, embedder, "Please cancel my subscription", threshold=0.99)
    assert strict[0].verdict == "miss"
    by_model = EntryFilter(model="gpt-4o")
    orders = admin.nearest(filled.db, embedder, "Order A-1", threshold=0.5, flt=by_model)
    assert [n.prompt for n in orders] == ["Order A-1 please"]


DURATIONS = [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1.5h", 5400)]


def test_nearest_applies_persisted_thresholds(filled: SemanticCache, embedder: Any) -> None:
    text = "Please cancel my subscription"
    plain = EntryFilter(namespace="default", schema_name="Ticket")
    best = admin.nearest(filled.db, embedder, text, flt=plain, k=1)[0]
    # Nothing persisted: the default of the model the file records (the bundled one here).
    assert (best.threshold, best.verdict) == (BUNDLED_THRESHOLD, "hit")
    with filled.db.transaction() as conn:
        conn.execute("INSERT INTO thresholds VALUES ('schema:Ticket', 0.5, 'test', 1.0)")
        scope_target = f"scope:{best.scope}"
        conn.execute("INSERT INTO thresholds VALUES (?, 0.999, 'test', 1.0)", (scope_target,))
    found = admin.nearest(filled.db, embedder, text, flt=plain, k=10)
    limits = {n.scope == best.scope: n.threshold for n in found}
    assert limits == {True: 0.999, False: 0.5}  # the scope's own wins over the schema's
    assert found[0].verdict == "miss"
    assert admin.nearest(filled.db, embedder, text, threshold=0.8, flt=plain)[0].verdict == "hit"


@pytest.mark.parametrize(("text", "seconds"), [*DURATIONS, ("1w", 604800)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert admin.parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    for text in ("", "7 days", "-1d", "d"):
        with pytest.raises(UsageError):
            admin.parse_duration(text)
