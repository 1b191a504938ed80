"""The PostgreSQL schema of a cache, as numbered migrations applied once each, in order.

The tables mirror a SQLite cache file (``semcache.storage.schema``) so that both engines hold the
same rows, plus the change feed (``feed``, ``feed_state``; see ``semcache.storage.postgres.feed``).
Tables are created in the connection's current schema: give each cache its own database, or its
own schema with ``?options=-csearch_path%3Dname`` in the URL.

Opening a cache reads ``schema_migrations`` and changes nothing when it is current, so the role
the app servers use needs no DDL rights (README, "Running a fleet", lists its GRANTs); a role that
owns the schema applies missing migrations, under an advisory lock so that nodes starting together
apply each one once. A database migrated by a newer semcache is refused. ``OPTIONAL`` migrations
are applied only by a cache that asks for what they add (``apply``). What maintenance asks of the
schema lives here too: whether a cache is there (``require``), a table's columns, the tables' size.
"""

from __future__ import annotations

from typing import Any

from semcache.errors import CacheNotFoundError, ConfigMismatchError

# The advisory locks of a cache: (LOCK_CLASS, hashtext(schema) XOR offset) keys per schema.
LOCK_CLASS = 770318
MIGRATE_LOCK, FEED_LOCK, EVICT_LOCK, SNAPSHOT_LOCK = 0, 1, 2, 3

_V1 = (
    """CREATE TABLE settings (key text PRIMARY KEY, value text NOT NULL)""",
    """CREATE TABLE entries (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        exact_key text NOT NULL UNIQUE,
        scope text NOT NULL,
        namespace text NOT NULL,
        model text,
        schema_name text NOT NULL,
        prompt text,
        request_json text NOT NULL,
        response_json text NOT NULL,
        raw_json text,
        usage_json text,
        total_tokens bigint NOT NULL DEFAULT 0,
        embedding bytea,
        created_at double precision NOT NULL,
        last_hit_at double precision,
        hits bigint NOT NULL DEFAULT 0,
        expires_at double precision
    )""",
    "CREATE INDEX entries_scope_id ON entries (scope, id)",
    "CREATE INDEX entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL",
    "CREATE INDEX entries_recency ON entries ((coalesce(last_hit_at, created_at)), id)",
    "CREATE TABLE counters (name text PRIMARY KEY, value bigint NOT NULL)",
    """CREATE TABLE thresholds (target text PRIMARY KEY, threshold double precision NOT NULL,
        source text NOT NULL, updated_at double precision NOT NULL)""",
    """CREATE TABLE vetoes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at double precision NOT NULL, scope text NOT NULL, entry_id bigint NOT NULL,
        query text NOT NULL, candidate text NOT NULL, similarity double precision NOT NULL,
        stage text NOT NULL, reason text NOT NULL)""",
    """CREATE TABLE feedback (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at double precision NOT NULL, entry_id bigint NOT NULL, scope text NOT NULL,
        query text, candidate text, similarity double precision, query_embedding bytea,
        note text)""",
    "CREATE INDEX feedback_entry ON feedback (entry_id)",
    """CREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at double precision NOT NULL, namespace text NOT NULL, scope text NOT NULL,
        query text, entry_id bigint, matched_prompt text, similarity double precision,
        verdict text NOT NULL, reason text, latency_ms double precision NOT NULL)""",
    "CREATE INDEX audit_created ON audit (created_at)",
    """CREATE TABLE shadow (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at double precision NOT NULL, scope text NOT NULL, entry_id bigint NOT NULL,
        similarity double precision NOT NULL, agree boolean NOT NULL,
        differing_fields text NOT NULL)""",
    "CREATE INDEX shadow_scope ON shadow (scope)",
    # The change feed: one row per entry added or removed, numbered in commit order.
    "CREATE SEQUENCE feed_seq",
    """CREATE TABLE feed (seq bigint PRIMARY KEY, scope text NOT NULL, entry_id bigint NOT NULL,
        op smallint NOT NULL, created_at double precision NOT NULL)""",
    "CREATE INDEX feed_scope_seq ON feed (scope, seq)",
    "CREATE INDEX feed_created ON feed (created_at)",
    """CREATE TABLE feed_state (one boolean PRIMARY KEY DEFAULT true CHECK (one),
        entries bigint NOT NULL, pruned_through bigint NOT NULL)""",
    "INSERT INTO feed_state (entries, pruned_through) VALUES (0, 0)",
    # Runs at commit (a deferred constraint trigger), after every other statement of the
    # transaction: the feed number is taken under a lock that is released only once the commit
    # is visible to other sessions, so numbers are handed out in commit order. The entry count
    # is kept here too, under the same lock, so that count() never scans the table.
    f"""CREATE FUNCTION semcache_feed() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
    BEGIN
        PERFORM pg_advisory_xact_lock({LOCK_CLASS}, hashtext(TG_TABLE_SCHEMA) # {FEED_LOCK});
        IF TG_OP = 'INSERT' THEN
            INSERT INTO feed VALUES (nextval('feed_seq'), NEW.scope, NEW.id, 1,
                                     extract(epoch FROM clock_timestamp()));
            UPDATE feed_state SET entries = entries + 1 WHERE one;
        ELSE
            INSERT INTO feed VALUES (nextval('feed_seq'), OLD.scope, OLD.id, -1,
                                     extract(epoch FROM clock_timestamp()));
            UPDATE feed_state SET entries = entries - 1 WHERE one;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE CONSTRAINT TRIGGER entries_feed AFTER INSERT OR DELETE ON entries
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION semcache_feed()""",
)

# Near-miss labels and the threshold history (``semcache.labels``, ``semcache.calibration``).
_V2 = (
    """CREATE TABLE near_misses (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at double precision NOT NULL, scope text NOT NULL, entry_id bigint NOT NULL,
        similarity double precision NOT NULL, threshold double precision NOT NULL,
        stage text NOT NULL, agree smallint NOT NULL, differing_fields text NOT NULL,
        query text, candidate text, answer_json text, candidate_answer_json text)""",
    "CREATE INDEX near_misses_scope ON near_misses (scope, similarity)",
    "CREATE INDEX near_misses_created ON near_misses (created_at)",
    """CREATE TABLE threshold_changes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        created_at double precision NOT NULL, target text NOT NULL, old double precision,
        new double precision, source text NOT NULL, evidence text NOT NULL)""",
)

# instructor's ``cache=`` table (``semcache.storage.instructor_table``): on SQLite the adapter
# creates it on first use; here it is part of the schema, so app roles need no DDL rights.
_V3 = (
    """CREATE TABLE instructor_cache (key text PRIMARY KEY, value text NOT NULL,
        created_at double precision, expires_at double precision, hits bigint)""",
    "CREATE INDEX instructor_cache_expires ON instructor_cache (expires_at)",
)

# Prebuilt FAISS indexes that a new node downloads instead of building
# (``semcache.storage.postgres.snapshots``): one head row per scope, naming the chunks of its
# current snapshot. Chunks are stored uncompressed out of line (STORAGE EXTERNAL): serialized
# float vectors do not compress, and trying costs CPU on every publish. Independent of every
# other migration's tables.
_V4 = (
    """CREATE TABLE index_snapshots (scope text PRIMARY KEY, snapshot text NOT NULL,
        seq bigint NOT NULL, kind text NOT NULL, vectors text NOT NULL,
        dimension integer NOT NULL, embedder text NOT NULL, count bigint NOT NULL,
        bytes bigint NOT NULL, crc32 bigint NOT NULL, chunks integer NOT NULL,
        tombstones bytea NOT NULL, created_at double precision NOT NULL)""",
    """CREATE TABLE index_snapshot_chunks (snapshot text NOT NULL, n integer NOT NULL,
        data bytea NOT NULL, PRIMARY KEY (snapshot, n))""",
    "ALTER TABLE index_snapshot_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
)

# Near-miss labels keep the similarity of the candidate answer agreement would weigh against
# theirs (``semcache.labels``); older rows have none.
_V6 = ("ALTER TABLE near_misses ADD COLUMN rival double precision",)

# (version, what it does, statements), oldest first; a released migration is never edited.
# Every version not yet recorded is applied, in order (not only those above the highest): two
# branches may each add a migration, and a database that got the later number first still
# receives the other.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (1, "entries, bookkeeping, change feed", _V1),
    (2, "near-miss labels, threshold history", _V2),
    (3, "instructor's cache= table", _V3),
    (4, "prebuilt index snapshots", _V4),
    (6, "near-miss rivals", _V6),
)
# Migrations applied only when a cache asks for what they add, never by ``migrate``: their
# statements need something the server may lack. 5: the pgvector search column
# (``semcache.storage.postgres.vectors``; ``search="pgvector"``).
OPTIONAL = {5: "pgvector search column"}
# Every table of a cache (what ``table_bytes`` measures).
TABLES = (
    "schema_migrations", "settings", "entries", "counters", "thresholds", "vetoes", "feedback",
    "audit", "shadow", "feed", "feed_state", "near_misses", "threshold_changes",
    "instructor_cache", "index_snapshots", "index_snapshot_chunks",
)  # fmt: skip
LATEST = max(MIGRATIONS[-1][0], *OPTIONAL)


def lock_key(offset: int) -> str:
    """SQL for the advisory lock key ``offset`` of the current schema (no user input)."""
    return f"{LOCK_CLASS}, hashtext(current_schema()) # {offset}"


def version(conn: Any) -> int:
    """The schema's migration version; 0 when semcache never migrated it."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return int(row[0] or 0)


def require(conn: Any, location: str) -> None:
    """Refuse a schema semcache never migrated (maintenance opens only a cache that exists: a
    typo in a URL must not report an empty cache)."""
    if version(conn) != 0:
        return
    schema = conn.execute("SELECT current_schema()").fetchone()[0]
    where = (
        "no schema of its search_path exists"
        if schema is None
        else (f"schema {schema!r} holds no semcache tables")
    )
    raise CacheNotFoundError(f"{location}: no semcache cache there ({where})")


def columns(conn: Any, table: str) -> list[str]:
    """The columns of ``table`` in the current schema, in table order (empty: no such table)."""
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def table_bytes(conn: Any) -> int:
    """The on-disk size of the cache's ``TABLES``, their indexes and TOAST data."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = "
        "current_schema() AND c.relkind = 'r' AND c.relname = ANY(%s)",
        (list(TABLES),),
    ).fetchone()
    return int(row[0])


def migrate(conn: Any) -> int:
    """Apply missing migrations in one transaction; returns the version reached.

    ``conn`` is an autocommit psycopg connection. A current schema costs a few reads and no lock.
    """
    _check(version(conn))
    if not _missing(conn):
        return LATEST
    with conn.transaction():
        conn.execute(f"SELECT pg_advisory_xact_lock({lock_key(MIGRATE_LOCK)})")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        _check(version(conn))
        missing = _missing(conn)  # another node may have migrated meanwhile
        for number, description, statements in MIGRATIONS:
            if number in missing:
                _run(conn, number, description, statements)
    return LATEST


def _run(conn: Any, number: int, description: str, statements: tuple[str, ...]) -> None:
    """Run one migration's statements and record it (inside the caller's transaction)."""
    for statement in statements:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
        (number, description),
    )


def apply(conn: Any, number: int, description: str, statements: tuple[str, ...]) -> bool:
    """Apply one of the ``OPTIONAL`` migrations in one transaction, under the migration lock;
    False when another node applied it meanwhile."""
    assert number in OPTIONAL
    migrate(conn)  # the schema_migrations table, and everything this one builds on
    with conn.transaction():
        conn.execute(f"SELECT pg_advisory_xact_lock({lock_key(MIGRATE_LOCK)})")
        if number in applied(conn):
            return False
        _run(conn, number, description, statements)
    return True


def applied(conn: Any) -> set[int]:
    """The migration versions the schema has recorded."""
    if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is None:
        return set()
    return {int(v) for (v,) in conn.execute("SELECT version FROM schema_migrations").fetchall()}


def _missing(conn: Any) -> set[int]:
    """The versions of ``MIGRATIONS`` the schema has not recorded (``OPTIONAL`` ones aside)."""
    return {number for number, _, _ in MIGRATIONS} - applied(conn)


def _check(found: int) -> int:
    if found > LATEST:
        raise ConfigMismatchError(
            f"the database holds semcache schema version {found}; this semcache knows up to "
            f"{LATEST}: upgrade semcache on this node"
        )
    return found
