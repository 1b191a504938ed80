"""The layout of a cache file: tables, views, and the columns added since the first version.

Plain tables with JSON in text columns, so ``sqlite3`` and Datasette users can read a cache file.
Every statement is idempotent (``IF NOT EXISTS``): opening a file creates what it lacks. That is
also how a file written by an earlier version gains the tables added since (``near_misses``,
``threshold_changes``): new tables need no version bump, because a file that has them still reads
in the earlier version, which ignores them. Columns added to existing tables are ``ADDED_COLUMNS``.
"""

from __future__ import annotations

FORMAT_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exact_key TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    namespace TEXT NOT NULL,
    model TEXT,
    schema_name TEXT NOT NULL,
    prompt TEXT,
    request_json TEXT NOT NULL,
    response_json TEXT NOT NULL,
    raw_json TEXT,
    usage_json TEXT,
    total_tokens INTEGER NOT NULL DEFAULT 0,
    embedding BLOB,
    created_at REAL NOT NULL,
    last_hit_at REAL,
    hits INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS entries_scope_id ON entries (scope, id);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS thresholds (
    target TEXT PRIMARY KEY,
    threshold REAL NOT NULL,
    source TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS vetoes (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    scope TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    query TEXT NOT NULL,
    candidate TEXT NOT NULL,
    similarity REAL NOT NULL,
    stage TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    entry_id INTEGER NOT NULL,
    scope TEXT NOT NULL,
    query TEXT,
    candidate TEXT,
    similarity REAL,
    query_embedding BLOB,
    note TEXT
);
CREATE INDEX IF NOT EXISTS feedback_entry ON feedback (entry_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    namespace TEXT NOT NULL,
    scope TEXT NOT NULL,
    query TEXT,
    entry_id INTEGER,
    matched_prompt TEXT,
    similarity REAL,
    verdict TEXT NOT NULL,
    reason TEXT,
    latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_created ON audit (created_at);
CREATE TABLE IF NOT EXISTS shadow (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    scope TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    similarity REAL NOT NULL,
    agree INTEGER NOT NULL,
    differing_fields TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shadow_scope ON shadow (scope);
CREATE TABLE IF NOT EXISTS near_misses (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    scope TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    similarity REAL NOT NULL,
    threshold REAL NOT NULL,
    stage TEXT NOT NULL,
    agree INTEGER NOT NULL,
    differing_fields TEXT NOT NULL,
    query TEXT,
    candidate TEXT,
    answer_json TEXT,
    candidate_answer_json TEXT,
    rival REAL
);
CREATE INDEX IF NOT EXISTS near_misses_scope ON near_misses (scope, similarity);
CREATE INDEX IF NOT EXISTS near_misses_created ON near_misses (created_at);
CREATE TABLE IF NOT EXISTS threshold_changes (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    target TEXT NOT NULL,
    old REAL,
    new REAL,
    source TEXT NOT NULL,
    evidence TEXT NOT NULL
);
"""

# Columns added to ``entries`` after the first files were written, oldest first.
ADDED_COLUMNS = (("entries", "expires_at", "REAL"), ("near_misses", "rival", "REAL"))

# Without these, the expiry sweep and the size bound scan and sort the whole table: 1.6 s at
# 1M entries, paid inside whichever lookup runs maintenance (measured by benchmarks/scale.py).
# The recency expression must stay exactly the one ``Store.evict_lru`` orders by.
ADDED_INDEXES = (
    "CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at) "
    "WHERE expires_at IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS entries_recency ON entries (coalesce(last_hit_at, created_at), id)",
)

VIEWS = {
    "scope_summary": """SELECT scope, namespace, model, schema_name, count(*) AS entries,
        sum(hits) AS hits, max(created_at) AS last_created
        FROM entries GROUP BY scope, namespace, model, schema_name""",
    "entries_overview": """SELECT id, namespace, model, schema_name, prompt, hits, total_tokens,
        embedding IS NOT NULL AS embedded,
        datetime(created_at, 'unixepoch') AS created_at,
        datetime(last_hit_at, 'unixepoch') AS last_hit_at,
        datetime(expires_at, 'unixepoch') AS expires_at
        FROM entries""",
    "hits_per_scope": """SELECT scope, namespace, model, schema_name, count(*) AS entries,
        sum(hits) AS hits, sum(hits * total_tokens) AS tokens_avoided,
        datetime(max(last_hit_at), 'unixepoch') AS last_hit_at
        FROM entries GROUP BY scope, namespace, model, schema_name""",
}
