"""The `make demo` workload: its data, its stub provider and one short end-to-end run.

The demo is the product's main job, so its pieces are tested like product code: the data file
must be what the generator produces, every answer must survive the real openai + instructor
parsing path through the stub, and a short run must produce an internally consistent report.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import instructor
import pytest
from openai import BadRequestError, OpenAI

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # demo/ lives at the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.app import DATA_PATH, MODEL, SYSTEM_PROMPT, Ticket, answers_by_text, load_stream
from demo.build_data import build_stream, render
from demo.report import percentile
from demo.run import run_demo
from demo.stub_provider import StubProvider


def test_data_file_is_what_the_generator_writes() -> None:
    assert DATA_PATH.read_text(encoding="utf-8") == render(build_stream())


def test_data_stream_shape() -> None:
    requests = load_stream()
    kinds: dict[str, int] = {}
    for request in requests:
        kinds[request.kind] = kinds.get(request.kind, 0) + 1
    assert kinds == {"original": 60, "repeat": 60, "paraphrase": 130, "lookalike": 70}
    assert [r.id for r in requests] == list(range(1, len(requests) + 1))

    originals = {r.group: r for r in requests if r.kind == "original"}
    seen: set[str] = set()
    for request in requests:
        base = request.group.split("-")[0]
        if request.kind == "original":
            seen.add(request.group)
            continue
        assert base in seen, f"request {request.id} comes before its original"
        original = originals[base]
        if request.kind == "repeat":
            assert request.text == original.text
            assert request.answer == original.answer
        elif request.kind == "paraphrase":
            assert request.text != original.text
            assert request.answer == original.answer
        else:
            assert request.group != base
            assert request.answer != original.answer
    answers_by_text(requests)  # raises if one text carries two answers


def test_stub_answers_parse_into_tickets_for_every_line() -> None:
    requests = load_stream()
    with StubProvider(answers_by_text(requests), latency_s=0.0) as stub:
        client = instructor.from_openai(OpenAI(base_url=stub.base_url, api_key="x"))
        for request in requests:
            ticket, completion = client.create_with_completion(
                model=MODEL,
                response_model=Ticket,
                messages=[
                    {"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": request.text},
                ],
                max_retries=1,
            )
            assert isinstance(ticket, Ticket)
            assert ticket.model_dump(mode="json") == request.answer, request.id
            assert completion.model == MODEL
            assert completion.usage.total_tokens > completion.usage.completion_tokens > 0
        assert stub.calls == len(requests)


def test_stub_rejects_unknown_text_and_unknown_routes() -> None:
    with StubProvider({"known": {"x": 1}}, latency_s=0.0) as stub:
        client = OpenAI(base_url=stub.base_url, api_key="x", max_retries=0)
        with pytest.raises(BadRequestError, match="no answer"):
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "unknown"}]
            )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(stub.base_url + "/models", timeout=5)
        assert info.value.code == 404
        base_url = stub.base_url
    assert stub.calls == 1
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base_url + "/chat/completions", data=b"{}", timeout=2)


def test_percentile_matches_linear_interpolation() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert percentile([7.0], 95) == 7.0


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # stay on the offline stub
    db = tmp_path / "demo" / "demo.db"
    limit = 80
    report = run_demo(db, limit=limit, latency_s=0.0, progress=False)
    stream = load_stream()[:limit]
    repeats = sum(r.kind == "repeat" for r in stream)

    assert report.mode == "stub"
    assert report.requests == limit
    assert report.errors == 0
    hits = report.hits["exact"] + report.hits["semantic"]
    assert report.requests == report.provider_calls + hits
    assert report.provider_calls == report.misses == report.provider_calls_seen_by_server
    assert report.calls_avoided == hits > 0
    assert repeats > 0
    assert report.hits_by_kind["repeat"]["exact"] == repeats  # an exact repeat never misses
    assert report.hits_by_kind["original"]["provider"] == sum(r.kind == "original" for r in stream)
    assert report.wrong_hits_by_kind["repeat"] == 0
    assert report.tokens_saved > 0
    assert report.latency_ms["exact"]["n"] == report.hits["exact"]
    assert report.provider_answers_differing == 0  # the stub answers from the data file

    stats = report.cache_stats
    assert stats["exact_hits"] == report.hits["exact"]
    assert stats["semantic_hits"] == report.hits["semantic"]
    assert stats["misses"] == report.misses
    assert stats["entries"] == report.provider_calls
    assert stats["tokens_avoided"] == report.tokens_saved

    written = json.loads((db.parent / "report.json").read_text(encoding="utf-8"))
    assert written == json.loads(json.dumps(report.to_json()))


def test_demo_with_two_workers_sharing_a_postgresql_cache(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python demo/run.py --store postgresql://... --workers 2`, on a private schema."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    limit = 40
    report_path = tmp_path / "report.json"
    report = run_demo(pg_dsn, limit=limit, latency_s=0.0, progress=False, workers=2,
                      report_path=report_path)  # fmt: skip
    hits = report.hits["exact"] + report.hits["semantic"]
    assert report.requests == limit and report.errors == 0 and hits > 0
    assert report.requests == report.provider_calls + hits
    assert report.provider_calls == report.misses == report.provider_calls_seen_by_server
    assert report.wrong_hits_by_kind["repeat"] == 0 and report.provider_answers_differing == 0
    stats = report.cache_stats  # the database's totals: both workers' counters
    assert stats["exact_hits"] == report.hits["exact"]
    assert stats["semantic_hits"] == report.hits["semantic"]
    assert stats["misses"] == report.misses
    # Two workers may both miss on one text before either stored it: one entry, two calls.
    assert 0 < stats["entries"] <= report.provider_calls
    assert json.loads(report_path.read_text()) == json.loads(json.dumps(report.to_json()))
    with pytest.raises(ValueError, match="already holds a cache"):  # fresh never deletes rows
        run_demo(pg_dsn, limit=2, latency_s=0.0, progress=False, workers=2, report_path=report_path)
