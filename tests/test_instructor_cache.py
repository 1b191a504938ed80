"""``SQLiteCache`` as instructor's own ``cache=``: real openai + instructor, HTTP faked, real SQLite."""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import instructor
import openai
import pytest
from pydantic import BaseModel

from semcache import SemanticCache, UsageError
from semcache.integrations.instructor_cache import (
    TABLE,
    InstructorCacheStats,
    SQLiteCache,
    instructor_cache_stats,
)
from semcache.storage.sqlite import SQLiteStore

from .conftest import FakeProvider, async_openai_client, openai_client, readme_block

ROOT = Path(__file__).resolve().parent.parent


class Answer(BaseModel):
    text: str


class FakeClock:
    """A clock the test moves by hand, so TTLs are checked without sleeping."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def icache(db_path: Path, clock: FakeClock) -> Iterator[SQLiteCache]:
    with SQLiteCache(db_path, clock=clock) as c:
        yield c


def ask(client: Any, text: str, **kw: Any) -> Any:
    return client.create(
        model="gpt-4o-mini",
        response_model=Answer,
        messages=[{"role": "user", "content": text}],
        **kw,
    )


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT key, value, expires_at, hits FROM {TABLE}").fetchall()


def test_second_identical_call_does_not_reach_the_provider(
    icache: SQLiteCache, provider: FakeProvider, db_path: Path
) -> None:
    client = instructor.from_openai(openai_client(provider), cache=icache)
    first = ask(client, "How do I reset my password?")
    second = ask(client, "How do I reset my password?")
    assert provider.count == 1
    assert second.model_dump() == first.model_dump() == {"text": "How do I reset my password?"}
    assert icache.stats() == InstructorCacheStats(entries=1, expired=0, hits=1, misses=1)
    ((key, value, expires_at, hits),) = rows(db_path)
    assert re.fullmatch(r"[0-9a-f]{64}", key)  # instructor's hash, not the request
    assert json.loads(json.loads(value)["model"]) == {"text": "How do I reset my password?"}
    assert expires_at is None and hits == 1


def test_create_with_completion_restores_the_stored_completion(
    icache: SQLiteCache, provider: FakeProvider
) -> None:
    client = instructor.from_openai(openai_client(provider), cache=icache)
    _, live = client.create_with_completion(
        model="gpt-4o-mini", response_model=Answer, messages=[{"role": "user", "content": "hi"}]
    )
    value, cached = client.create_with_completion(
        model="gpt-4o-mini", response_model=Answer, messages=[{"role": "user", "content": "hi"}]
    )
    assert provider.count == 1
    assert value.text == "hi"
    assert cached.id == live.id and cached.usage.total_tokens == live.usage.total_tokens


def test_a_different_request_misses(icache: SQLiteCache, provider: FakeProvider) -> None:
    client = instructor.from_openai(openai_client(provider), cache=icache)
    ask(client, "How do I reset my password?")
    other = ask(client, "How can I reset my password?")  # exact only: a paraphrase is a miss
    assert provider.count == 2 and other.text == "How can I reset my password?"


async def test_async_client(icache: SQLiteCache, provider: FakeProvider) -> None:
    client = instructor.from_openai(async_openai_client(provider), cache=icache)
    first = await ask(client, "How do I reset my password?")
    second = await ask(client, "How do I reset my password?")
    assert provider.count == 1 and second.model_dump() == first.model_dump()


def test_cache_namespace_separates_entries(icache: SQLiteCache, provider: FakeProvider) -> None:
    client = instructor.from_openai(openai_client(provider), cache=icache)
    ask(client, "hello", cache_namespace="tenant-a")
    ask(client, "hello", cache_namespace="tenant-b")
    assert provider.count == 2
    ask(client, "hello", cache_namespace="tenant-a")
    ask(client, "hello", cache_namespace="tenant-b")
    assert provider.count == 2
    assert len(icache) == 2


def test_default_namespace_is_per_client_an_explicit_one_is_shared(
    icache: SQLiteCache, provider: FakeProvider
) -> None:
    """instructor draws a random namespace per client; the README tells users to pass one."""
    one = instructor.from_openai(openai_client(provider), cache=icache)
    two = instructor.from_openai(openai_client(provider), cache=icache)
    ask(one, "hello")
    ask(two, "hello")
    assert provider.count == 2
    ask(one, "hello", cache_namespace="shared")
    ask(two, "hello", cache_namespace="shared")
    assert provider.count == 3


def test_the_key_covers_the_api_key_without_storing_it(
    icache: SQLiteCache, provider: FakeProvider, db_path: Path
) -> None:
    client = instructor.from_openai(openai_client(provider), cache=icache)
    ask(client, "hello", cache_namespace="shared")
    ask(client, "hello", cache_namespace="shared")
    assert provider.count == 1
    other = openai_client(provider)
    other.api_key = "sk-other-key"
    ask(instructor.from_openai(other, cache=icache), "hello", cache_namespace="shared")
    assert provider.count == 2  # another credential is another client identity
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert files
    for path in files:  # the WAL holds recent pages too
        data = path.read_bytes()
        assert b"sk-test" not in data and b"sk-other" not in data


def test_cache_ttl_expires_entries(
    icache: SQLiteCache, provider: FakeProvider, clock: FakeClock, db_path: Path
) -> None:
    client = instructor.from_openai(openai_client(provider), cache=icache)
    ask(client, "hello", cache_ttl=1)
    assert rows(db_path)[0][2] == clock.now + 1
    clock.now += 0.5
    ask(client, "hello", cache_ttl=1)
    assert provider.count == 1
    clock.now += 0.5  # exactly at expiry: expired
    ask(client, "hello", cache_ttl=1)
    assert provider.count == 2
    ask(client, "hello", cache_ttl=1)
    assert provider.count == 2  # the fresh answer was stored again
    assert len(rows(db_path)) == 1


def test_cache_ttl_with_the_real_clock(db_path: Path, provider: FakeProvider) -> None:
    with SQLiteCache(db_path) as cache:
        client = instructor.from_openai(openai_client(provider), cache=cache)
        ask(client, "hello", cache_ttl=1)
        ask(client, "hello", cache_ttl=1)
        assert provider.count == 1
        time.sleep(1.1)
        ask(client, "hello", cache_ttl=1)
        assert provider.count == 2


def test_expired_rows_are_never_returned_and_are_reclaimed(
    icache: SQLiteCache, clock: FakeClock, db_path: Path
) -> None:
    icache.set("short", '"a"', ttl=1)
    icache.set("other-short", '"b"', ttl=1)
    icache.set("forever", '"c"')
    clock.now += 5
    assert icache.stats() == InstructorCacheStats(entries=1, expired=2, hits=0, misses=0)
    assert "short" not in icache and "forever" in icache
    assert icache.get("short") is None  # and the row goes with the lookup
    assert {r[0] for r in rows(db_path)} == {"other-short", "forever"}
    icache.set("new", '"d"', ttl=60)  # every write sweeps what has expired
    assert {r[0] for r in rows(db_path)} == {"forever", "new"}
    icache.set("gone", '"e"', ttl=0)
    assert icache.get("gone") is None
    icache.set("x", '"f"', ttl=10)
    clock.now += 11
    assert icache.expire() == 1
    assert icache.stats().expired == 0


@pytest.mark.parametrize(
    "value",
    [object(), b'{"model": "{}"}', {"model": "{}"}, Answer(text="x"), "not json", "NaN", None],
    ids=["object", "bytes", "dict", "model", "text", "nan", "none"],
)
def test_only_json_text_is_stored(
    icache: SQLiteCache, db_path: Path, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    icache.set("k", '{"model": "{\\"text\\": \\"old\\"}"}')
    with caplog.at_level(logging.DEBUG, logger="semcache"):
        icache.set("k", value)
    assert "not a JSON document" in caplog.text
    # Refused, and the key's previous value is not left behind as if it were current.
    assert icache.get("k") is None and rows(db_path) == []


def test_values_round_trip_exactly(icache: SQLiteCache) -> None:
    value = '{"model": "{\\"text\\":\\"é\\"}",  "raw": null}'
    icache.set("k", value)
    assert icache.get("k") == value
    icache.set("k", '"replaced"')
    assert icache.get("k") == '"replaced"'
    assert icache.delete("k") and not icache.delete("k")


def test_bad_arguments_are_usage_errors(db_path: Path, icache: SQLiteCache) -> None:
    with pytest.raises(UsageError):
        SQLiteCache(42)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        icache.set("k", '"v"', ttl="soon")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        icache.set("k", '"v"', ttl=True)


def test_persists_across_processes(
    icache: SQLiteCache, provider: FakeProvider, db_path: Path
) -> None:
    ask(instructor.from_openai(openai_client(provider), cache=icache), "hi", cache_namespace="p")
    assert provider.count == 1
    script = textwrap.dedent(
        f"""
        import json, instructor
        from pydantic import BaseModel
        from semcache.integrations.instructor_cache import SQLiteCache
        from tests.conftest import FakeProvider, openai_client

        class Answer(BaseModel):
            text: str

        provider = FakeProvider(lambda body: {{"text": "from the child"}})
        with SQLiteCache({str(db_path)!r}) as cache:
            client = instructor.from_openai(openai_client(provider), cache=cache)
            answer = client.create(model="gpt-4o-mini", response_model=Answer,
                                   messages=[{{"role": "user", "content": "hi"}}],
                                   cache_namespace="p")
            print(json.dumps({{"calls": provider.count, "text": answer.text,
                              "hits": cache.stats().hits}}))
        """
    )
    out = _run(script)
    assert json.loads(out.splitlines()[-1]) == {"calls": 0, "text": "hi", "hits": 1}


def test_processes_write_concurrently(db_path: Path) -> None:
    SQLiteCache(db_path).close()
    script = textwrap.dedent(
        f"""
        import sys
        from semcache.integrations.instructor_cache import SQLiteCache
        with SQLiteCache({str(db_path)!r}) as cache:
            for i in range(40):
                cache.set(f"{{sys.argv[1]}}-{{i}}", f'{{{{"i": {{i}}}}}}', ttl=600)
                assert cache.get(f"{{sys.argv[1]}}-{{i}}") == f'{{{{"i": {{i}}}}}}'
        """
    )
    procs = [_spawn(script, str(n)) for n in range(3)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    with SQLiteCache(db_path) as cache:
        assert len(cache) == 120
        assert cache.stats().hits == 120


def test_threads_share_one_cache(icache: SQLiteCache) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(25):
                icache.set(f"{n}-{i}", json.dumps({"n": n, "i": i}))
                assert json.loads(icache.get(f"{n}-{i}") or "null") == {"n": n, "i": i}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(icache) == 200


def test_shares_a_semantic_cache_file(cache: SemanticCache, provider: FakeProvider) -> None:
    semantic = cache.wrap(instructor.from_openai(openai_client(provider)))
    semantic.create(
        model="gpt-4o-mini", response_model=Answer, messages=[{"role": "user", "content": "a"}]
    )
    exact = SQLiteCache(cache)
    assert exact.db is cache.db
    ask(instructor.from_openai(openai_client(provider), cache=exact), "b")
    exact.clear()
    exact.close()  # borrowed: the semantic cache stays open and keeps its entry
    assert len(cache) == 1 and cache.stats().entries == 1
    assert instructor_cache_stats(cache.db).misses == 1


def test_stats_of_a_file_that_never_used_it(db_path: Path) -> None:
    store = SQLiteStore(db_path)
    try:
        assert instructor_cache_stats(store) == InstructorCacheStats(0, 0, 0, 0)
        names = {r[0] for r in store.connection().execute("SELECT name FROM sqlite_master")}
        assert TABLE not in names  # reading stats does not create the table
    finally:
        store.close()


def test_a_broken_store_never_breaks_the_call(
    db_path: Path, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(db_path)
    broken = SQLiteCache(store)
    store.close()
    client = instructor.from_openai(openai_client(provider), cache=broken)
    with caplog.at_level(logging.WARNING, logger="semcache"):
        assert ask(client, "hello").text == "hello"
        assert ask(client, "hello").text == "hello"
    assert provider.count == 2
    assert "lookup failed" in caplog.text and "could not store" in caplog.text


def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = FakeProvider(lambda body: {"name": "Jason", "age": 25})

    class FakeOpenAI(openai.OpenAI):
        """What the README's ``OpenAI()`` builds here: a real client on the fake endpoint."""

        def __init__(self, **_: Any) -> None:
            transport = httpx.MockTransport(provider.handler)
            super().__init__(
                api_key="sk-test",
                base_url="http://fake/v1",
                http_client=httpx.Client(transport=transport),
            )

    monkeypatch.setattr(openai, "OpenAI", FakeOpenAI)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(readme_block("instructor's cache= parameter"), namespace)
    namespace["cache"].close()
    assert provider.count == 1
    assert namespace["user"].model_dump() == {"name": "Jason", "age": 25}
    assert "InstructorCacheStats(entries=1, expired=0, hits=1, misses=1)" in capsys.readouterr().out
    assert (tmp_path / "cache.db").exists()


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(script: str) -> str:
    proc = _spawn(script)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out
