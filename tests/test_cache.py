"""SemanticCache itself: direct API, long prompts, templates, persistence, processes, failures."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import instructor
import pytest
from pydantic import BaseModel, ConfigDict

from semcache import (
    ConfigMismatchError,
    SemanticCache,
    StoreError,
    UsageError,
    cache_hit,
)

from .conftest import FakeProvider, openai_client

REPO = Path(__file__).resolve().parents[1]


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_direct_store_and_lookup(cache: SemanticCache) -> None:
    completion = {"usage": {"total_tokens": 42}, "choices": [{"message": {"content": "x"}}]}
    entry_id = cache.store(user("Cancel my subscription"), Answer, Answer(text="cancel"),
                           completion=completion, model="m")  # fmt: skip
    assert entry_id is not None
    exact = cache.lookup(user("Cancel my subscription"), Answer, model="m")
    assert exact is not None and exact.tier == "exact" and exact.entry_id == entry_id
    assert exact.value == Answer(text="cancel")
    assert exact.completion.usage.total_tokens == 42
    assert exact.completion.choices[0].message.content == "x"
    near = cache.lookup(user("Please cancel my subscription"), Answer, model="m")
    assert near is not None and near.tier == "semantic"
    assert near.matched_prompt == "Cancel my subscription"
    assert cache.lookup(user("Cancel my subscription"), Answer, model="other") is None
    assert (
        cache.lookup(user("Cancel my subscription"), Answer, model="m", threshold=1.0) is not None
    )


def test_direct_api_entries_serve_wrapped_openai_clients(
    cache: SemanticCache, provider: FakeProvider
) -> None:
    cache.store(user("Cancel my subscription"), Answer, Answer(text="cancel"), model="m")
    client = cache.wrap(instructor.from_openai(openai_client(provider)))
    answer = client.create(
        model="m", response_model=Answer, messages=user("Cancel my subscription")
    )
    assert answer.text == "cancel" and provider.count == 0


def test_misuse_raises_clear_errors(cache: SemanticCache, db_path: Path, embedder: Any) -> None:
    with pytest.raises(UsageError):
        SemanticCache(db_path, threshold=1.5, embedder=embedder)
    with pytest.raises(UsageError):
        cache.lookup(user("x"), Answer, threshold=float("nan"))
    with pytest.raises(UsageError):
        cache.store(user("x"), Answer, 3)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        cache.wrap(object())


def test_frozen_models_are_served(cache: SemanticCache) -> None:
    class Frozen(BaseModel):
        model_config = ConfigDict(frozen=True)
        text: str

    cache.store(user("Where is my parcel?"), Frozen, Frozen(text="a"), completion={"id": "x"})
    hit = cache.lookup(user("Where is my parcel?"), Frozen)
    assert hit is not None and hit.value.text == "a" and hit.value._raw_response.id == "x"
    assert cache_hit(hit.value) is hit


def long_prompt(ending: str) -> str:
    prefix = " ".join(
        f"Clause {i}: the customer agrees to the terms of section {i}." for i in range(40)
    )
    return f"{prefix} Question: {ending}"


def test_long_prompts_never_match_on_a_shared_prefix(cache: SemanticCache, embedder: Any) -> None:
    a, b = long_prompt("may I cancel today?"), long_prompt("what is the delivery fee to Spain?")
    assert not embedder.fits(a)  # longer than the model's 256 word pieces
    # What the guard is for: the model itself cannot tell these two apart.
    va, vb = embedder.embed([a, b])
    assert float(va @ vb) > 0.999
    cache.store(user(a), Answer, Answer(text="cancel"))
    assert cache.lookup(user(b), Answer, threshold=0.5) is None
    hit = cache.lookup(user(a), Answer)
    assert hit is not None and hit.tier == "exact"


def test_templated_calls_embed_the_rendered_values(
    cache: SemanticCache, provider: FakeProvider
) -> None:
    client = cache.wrap(instructor.from_openai(openai_client(provider)))
    template = (
        "You are a meticulous support analyst. Read the customer's message below, identify the "
        "product, the problem and what they want, and answer with the structured ticket.\n\n"
        "Customer message: {{ message }}"
    )

    def ask(message: str) -> Answer:
        return client.create(  # type: ignore[no-any-return]
            model="m", response_model=Answer, messages=user(template), context={"message": message}
        )

    first = ask("How do I reset my password?")
    assert provider.calls[0]["messages"][0]["content"].endswith("How do I reset my password?")
    unrelated = ask("The blender I bought arrived broken")
    paraphrase = ask("How can I reset my password?")
    assert cache_hit(first) is None and cache_hit(unrelated) is None
    hit = cache_hit(paraphrase)
    assert hit is not None and hit.tier == "semantic"
    assert hit.matched_prompt == "How do I reset my password?"
    assert provider.count == 2


def run_python(code: str, *args: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (a new process, as a second app would be)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


CHILD = """
import json, sys
from pydantic import BaseModel
from semcache import SemanticCache

class Answer(BaseModel):
    text: str

cache = SemanticCache(sys.argv[1], threshold=0.85)
mine = [f"Where is order number {i} from the {i}th?" for i in range(int(sys.argv[2]), int(sys.argv[3]))]
for text in mine:
    cache.store([{"role": "user", "content": text}], Answer, Answer(text=text))
found = {}
for text in json.loads(sys.argv[4]):
    hit = cache.lookup([{"role": "user", "content": text}], Answer)
    found[text] = None if hit is None else [hit.tier, hit.value.text]
cache.close()
print(json.dumps(found))
"""


def test_reopen_from_disk_in_a_new_process(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, threshold=0.85) as cache:
        cache.store(user("How do I reset my password?"), Answer, Answer(text="reset"))
    probes = ["How do I reset my password?", "How can I reset my password?", "Opening hours?"]
    found = run_python(CHILD, str(db_path), "0", "0", json.dumps(probes))
    assert found == {
        "How do I reset my password?": ["exact", "reset"],
        "How can I reset my password?": ["semantic", "reset"],
        "Opening hours?": None,
    }


def test_two_processes_share_one_file(db_path: Path, embedder: Any) -> None:
    with SemanticCache(db_path, embedder=embedder, threshold=0.85) as cache:
        cache.store(user("How do I reset my password?"), Answer, Answer(text="reset"))
        cache.lookup(user("warm the index of this scope"), Answer)
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(db_path), "0", "30",
             json.dumps(["How can I reset my password?"])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        for i in range(100, 130):  # written while the child writes too
            text = f"Where is order number {i} from the {i}th?"
            cache.store(user(text), Answer, Answer(text=text))
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {
            "How can I reset my password?": ["semantic", "reset"]
        }
        assert len(cache) == 61
        for i in range(30):  # the child's entries, through both tiers of this process
            text = f"Where is order number {i} from the {i}th?"
            exact = cache.lookup(user(text), Answer)
            assert exact is not None and exact.tier == "exact" and exact.value.text == text
        near = cache.lookup(user("where's order number 7 from the 7th"), Answer)
        assert near is not None and near.tier == "semantic"
        assert near.value.text == "Where is order number 7 from the 7th?"


def test_reopening_with_another_embedder_is_refused(db_path: Path, embedder: Any) -> None:
    SemanticCache(db_path, embedder=embedder).close()

    class OtherEmbedder:
        name = "some/other-model"
        dimension = 8

        def embed(self, texts: Any) -> Any:
            raise AssertionError("never reached")

        def fits(self, text: str) -> bool:
            return True

    with pytest.raises(ConfigMismatchError, match="embedder_name"):
        SemanticCache(db_path, embedder=OtherEmbedder())


def test_damaged_file_is_a_clear_error(tmp_path: Path, embedder: Any) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        SemanticCache(bad, embedder=embedder)
    assert bad.read_bytes() == b"this is not a database" * 100


def test_cache_file_is_private(db_path: Path, embedder: Any) -> None:
    SemanticCache(db_path, embedder=embedder).close()
    assert db_path.stat().st_mode & 0o777 == 0o600


def test_broken_cache_falls_back_to_the_provider(
    cache: SemanticCache, provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    client = cache.wrap(instructor.from_openai(openai_client(provider)))
    client.create(model="m", response_model=Answer, messages=user("Where is my parcel?"))
    cache._store.close()  # the file goes away under the app: every read now fails
    with caplog.at_level(logging.WARNING, logger="semcache"):
        answer = client.create(
            model="m", response_model=Answer, messages=user("Where is my parcel?")
        )
    assert answer.text == "Where is my parcel?" and provider.count == 2
    assert "lookup failed" in caplog.text and "could not store" in caplog.text


def test_memory_cache_is_shared_across_threads(embedder: Any) -> None:
    import threading

    with SemanticCache(":memory:", embedder=embedder) as cache:
        cache.store(user("Where is my parcel?"), Answer, Answer(text="a"))
        seen: list[Any] = []
        worker = threading.Thread(
            target=lambda: seen.append(cache.lookup(user("Where is my parcel?"), Answer))
        )
        worker.start()
        worker.join()
        assert seen[0] is not None and seen[0].value.text == "a"


def test_served_values_can_be_compared(cache: SemanticCache) -> None:
    cache.store(user("Where is my parcel?"), Answer, Answer(text="a"))
    first = cache.lookup(user("Where is my parcel?"), Answer)
    second = cache.lookup(user("Where is my parcel?"), Answer)
    assert first is not None and second is not None
    assert first.value.model_dump() == second.value.model_dump()
    assert (first.value == second.value) in (True, False)  # no RecursionError through the hit


def test_a_file_from_an_earlier_version_is_migrated(db_path: Path, embedder: Any) -> None:
    import sqlite3

    with SemanticCache(db_path, embedder=embedder) as cache:
        cache.store(user("Where is my parcel?"), Answer, Answer(text="a"))
    conn = sqlite3.connect(db_path)
    conn.execute("DROP VIEW entries_overview")  # views and indexes name the column: drop them
    conn.execute("DROP INDEX entries_expiry")
    conn.execute("DROP INDEX entries_recency")
    conn.execute("ALTER TABLE entries DROP COLUMN expires_at")  # as written before TTLs existed
    conn.commit()
    conn.close()
    with SemanticCache(db_path, embedder=embedder) as cache:
        hit = cache.lookup(user("Where is my parcel?"), Answer)
        assert hit is not None and hit.value.text == "a"
        assert cache.store(user("Cancel my order"), Answer, Answer(text="c"), ttl=60) is not None
        indexes = {r[1] for r in cache.db.connection().execute("PRAGMA index_list(entries)")}
        assert {"entries_expiry", "entries_recency"} <= indexes


def test_expiry_sweep_and_size_bound_use_their_indexes(cache: SemanticCache) -> None:
    """At 1M entries a full scan costs 1.6 s inside whichever lookup runs maintenance."""
    from semcache.storage.sqlite import EXPIRED, RECENCY

    conn = cache.db.connection()

    def plan(sql: str, *params: Any) -> str:
        return " ".join(str(r[-1]) for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))

    sweep = plan(f"SELECT id, scope FROM entries WHERE {EXPIRED}", 0.0)
    assert "USING INDEX entries_expiry" in sweep, sweep
    oldest = plan(f"SELECT id, scope FROM entries ORDER BY {RECENCY} LIMIT ?", 10)
    assert "entries_recency" in oldest and "TEMP B-TREE" not in oldest, oldest


@pytest.mark.parametrize("kind", ["fp16", "sq8"])
def test_compressed_index_vectors_serve_the_same_hits(
    db_path: Path, embedder: Any, kind: str
) -> None:
    with SemanticCache(db_path, threshold=0.85, embedder=embedder, index_vectors=kind) as cache:  # type: ignore[arg-type]
        cache.store(user("How do I reset my password?"), Answer, Answer(text="reset"))
        cache.store(user("Where is my parcel?"), Answer, Answer(text="parcel"))
        hit = cache.lookup(user("How can I reset my password?"), Answer)
        assert hit is not None and hit.tier == "semantic" and hit.value.text == "reset"
        # The deciding similarity is the exact float32 one from SQLite, not the compressed one.
        vector = embedder.embed(["How can I reset my password?"])[0]
        stored = embedder.embed(["How do I reset my password?"])[0]
        assert hit.similarity == pytest.approx(float(vector @ stored), abs=1e-5)
        assert (
            cache.pipeline.scopes.index is not None and cache.pipeline.scopes.index.vectors == kind
        )


def test_unknown_index_vectors_are_refused(db_path: Path, embedder: Any) -> None:
    with pytest.raises(UsageError, match="index_vectors"):
        SemanticCache(db_path, embedder=embedder, index_vectors="int4")  # type: ignore[arg-type]
