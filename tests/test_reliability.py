"""Failing towards "call the provider": bad input, full disks, broken files, secrets, crashes,
many processes. The long-running ones are marked ``slow`` (CI runs them too)."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import instructor
import pytest
from pydantic import BaseModel

from semcache import SemanticCache, StoreError, cache_hit

from .conftest import FakeProvider, openai_client

REPO = Path(__file__).resolve().parents[1]
# One torch thread per child: several processes share two cores. The children embed with the
# bundled model, as the session's ``embedder`` fixture that reads their files here does.
ENV = {
    "HF_HUB_OFFLINE": "1",
    "SEMCACHE_EMBEDDER": "bundled",
    "PATH": "/usr/bin:/bin",
    "PYTHONPATH": str(REPO),
    "OMP_NUM_THREADS": "1",
}


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.mark.parametrize(
    ("messages", "cached"),
    [
        ([], True),  # exact tier only: nothing to embed
        ([{"role": "system", "content": "Only a system prompt"}], True),
        (user("NUL \x00 inside"), True),
        (user("word " * 200_000), True),  # 1 MB prompt: exact tier only
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                        },
                    ],
                }
            ],
            True,
        ),
    ],
    ids=["empty", "no-user-turn", "nul-byte", "one-megabyte", "image"],
)
def test_odd_messages_are_cached_exactly_or_pass_through(
    client: Any, provider: FakeProvider, messages: list[Any], cached: bool
) -> None:
    first = client.create(model="m", response_model=Answer, messages=messages)
    second = client.create(model="m", response_model=Answer, messages=messages)
    assert second.text == first.text
    hit = cache_hit(second)
    assert (hit is not None and hit.tier == "exact") is cached
    assert provider.count == (1 if cached else 2)


def test_lone_surrogates_are_not_cached(client: Any, provider: FakeProvider, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, logger="semcache"), pytest.raises(Exception) as info:
        client.create(model="m", response_model=Answer, messages=user("bad \ud800 text"))
    assert "surrogates" in str(info.value)  # the provider client's own error, as without a cache
    assert "lookup failed" not in caplog.text and len(client.cache) == 0


def test_models_with_async_validators_fail_as_instructor_does(client: Any) -> None:
    from instructor.v2.validation.async_validators import async_field_validator

    class Checked(BaseModel):
        text: str

        @async_field_validator("text")
        async def check(self, value: str) -> str:
            return value

    for _ in range(2):  # same error whether or not a cached answer exists
        with pytest.raises(Exception, match=r"(?i)async"):
            client.create(model="m", response_model=Checked, messages=user("hello"))


def test_full_disk_loses_nothing_already_stored(cache: SemanticCache, caplog: Any) -> None:
    cache.store(user("Where is my parcel?"), Answer, Answer(text="kept"))
    conn = cache.db.connection()
    (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is now full
    with caplog.at_level(logging.WARNING, logger="semcache"):
        stored = cache.store(user("A big answer"), Answer, Answer(text="x" * 200_000))
    assert stored is None and "could not store" in caplog.text
    hit = cache.lookup(user("Where is my parcel?"), Answer)
    assert hit is not None and hit.value.text == "kept" and len(cache) == 1


def test_fail_open_keeps_the_app_working(tmp_path: Path, embedder: Any) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(os.urandom(8192))
    provider = FakeProvider()
    with SemanticCache(bad, embedder=embedder, fail_open=True) as cache:
        assert cache.disabled
        client = cache.wrap(instructor.from_openai(openai_client(provider)))
        for _ in range(2):
            assert client.create(model="m", response_model=Answer, messages=user("hi")).text == "hi"
        assert provider.count == 2
    with pytest.raises(StoreError):
        SemanticCache(bad, embedder=embedder)


def test_secrets_never_reach_the_file(db_path: Path, embedder: Any) -> None:
    provider = FakeProvider()
    transport_client = openai_client(provider)
    with SemanticCache(db_path, embedder=embedder) as cache:
        client = cache.wrap(instructor.from_openai(transport_client))
        client.create(
            model="m", response_model=Answer, messages=user("hello"),
            extra_headers={"Authorization": "Bearer sk-header-secret"},
        )  # fmt: skip
    blob = b"".join(p.read_bytes() for p in db_path.parent.glob("cache.db*"))
    for secret in (b"sk-test", b"sk-header-secret", b"http://fake", b"Authorization"):
        assert secret not in blob


# -- processes ------------------------------------------------------------------------------

WRITER = """
import sys
from pydantic import BaseModel
from semcache import SemanticCache

class Answer(BaseModel):
    text: str

cache = SemanticCache(sys.argv[1], threshold=0.85)
cache.embedder.embed(["load the model before the first write"])
print("ready", flush=True)
i = int(sys.argv[2])
while True:
    text = f"Please check the delivery status of parcel number {i} for customer {i * 7}"
    entry = cache.store([{"role": "user", "content": text}], Answer, Answer(text=str(i)))
    print(f"stored {i} {entry}", flush=True)
    i += 1
"""


@pytest.mark.slow
def test_killed_writer_loses_no_returned_write(db_path: Path, embedder: Any) -> None:
    """SIGKILL at random points in a stream of writes, five times over one file."""
    rng = random.Random(7)
    confirmed: dict[int, int] = {}
    for round_ in range(5):
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(db_path), str(round_ * 100_000)],
            stdout=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
        )  # fmt: skip
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        # The kill point is a number of confirmed writes, then a short random delay so that it
        # lands anywhere in the next write: counted, not timed, so a loaded machine that writes
        # slowly still kills after writes have returned.
        for _ in range(rng.randint(2, 12)):
            line = child.stdout.readline().split()
            assert line and line[0] == "stored", line
            confirmed[int(line[1])] = int(line[2])
        time.sleep(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        with SemanticCache(db_path, embedder=embedder, threshold=0.85) as cache:
            for i, entry_id in confirmed.items():
                text = f"Please check the delivery status of parcel number {i} for customer {i * 7}"
                hit = cache.lookup(user(text), Answer)
                assert hit is not None and hit.value.text == str(i) and hit.entry_id == entry_id
            for i in rng.sample(sorted(confirmed), min(5, len(confirmed))):
                near = (
                    f"please check the delivery status of parcel number {i} for customer {i * 7}!"
                )
                hit = cache.lookup(user(near), Answer)
                assert hit is not None and hit.tier == "semantic" and hit.value.text == str(i)
            rows = cache.db.connection().execute("SELECT response_json FROM entries").fetchall()
            for (response_json,) in rows:  # nothing half-written
                Answer.model_validate_json(response_json)
    assert len(confirmed) >= 10


WORKER = """
import json, os, random, sys, time
from pydantic import BaseModel
from semcache import SemanticCache

class Answer(BaseModel):
    text: str

path, me, n_procs, seconds, outdir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
cache = SemanticCache(path, threshold=0.85, busy_timeout=2.0)
cache.embedder.embed(["load the model before the clock starts"])
errors, written, lookups = [], [], 0
rng = random.Random(me)
def text(p, i):
    return f"Worker {p} asks about invoice {i} for the {['red', 'blue', 'green', 'black'][p]} account"
end = time.monotonic() + seconds
i = 0
while time.monotonic() < end:
    try:
        if rng.random() < 0.4:
            cache.store([{"role": "user", "content": text(me, i)}], Answer, Answer(text=f"{me}:{i}"))
            written.append(i)
            i += 1
        else:
            p, j = rng.randrange(n_procs), rng.randrange(max(i, 1))
            hit = cache.lookup([{"role": "user", "content": text(p, j)}], Answer)
            lookups += 1
            # A semantic hit may match a look-alike (that is the threshold's business), but the
            # answer served must be the matched entry's own: an index pointing at the wrong row
            # would show here. An exact hit must be the requested entry.
            if hit is not None:
                words = hit.matched_prompt.split()
                owner = f"{words[1]}:{words[5]}"
                if hit.value.text != owner or (hit.tier == "exact" and owner != f"{p}:{j}"):
                    errors.append(f"wrong answer {hit.value.text} for {owner}")
    except Exception as exc:
        errors.append(repr(exc))
# Written aside and renamed: another worker must never read a file that exists but is empty.
with open(f"{outdir}/done-{me}.part", "w") as handle:
    handle.write(json.dumps(written))
os.replace(f"{outdir}/done-{me}.part", f"{outdir}/done-{me}")
while len([1 for k in range(n_procs) if os.path.exists(f"{outdir}/done-{k}")]) < n_procs:
    time.sleep(0.05)
missing = 0
for p in range(n_procs):
    for j in json.loads(open(f"{outdir}/done-{p}").read()):
        hit = cache.lookup([{"role": "user", "content": text(p, j)}], Answer)
        if hit is None or hit.value.text != f"{p}:{j}":
            missing += 1
cache.close()
print(json.dumps({"errors": errors, "written": len(written), "lookups": lookups, "missing": missing}))
"""


@pytest.mark.slow
def test_four_processes_share_one_file(db_path: Path, embedder: Any, tmp_path: Path) -> None:
    SemanticCache(db_path, embedder=embedder).close()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                textwrap.dedent(WORKER),
                str(db_path),
                str(k),
                "4",
                "8",
                str(tmp_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
            cwd=REPO,
        )
        for k in range(4)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["errors"] == [] for r in results), [r["errors"][:3] for r in results]
    assert all(r["missing"] == 0 for r in results)
    assert all(r["written"] >= 1 and r["lookups"] >= 1 for r in results)
    total = sum(r["written"] for r in results)
    with SemanticCache(db_path, embedder=embedder) as cache:
        assert len(cache) == total
