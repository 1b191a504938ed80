"""The demo with several worker processes sharing one cache, as app servers of a fleet do.

    python demo/run.py --store postgresql://user@host/db --workers 2

The parent starts the stub provider (or leaves the calls to OpenAI) and N workers; worker ``i``
sends requests ``i, i + N, i + 2N, ...`` of the stream through its own ``SemanticCache`` on the
shared store, so an answer one worker paid for is served to the others. Each worker is a fresh
``python -m demo.fleet`` process: the parent writes its job (the store, which may carry a
password, never goes on a command line where ``ps`` would show it) as one JSON line on its
stdin, the worker loads its model and says ``ready``, all start on ``go``, and each prints its
outcomes as one JSON line. No pickle crosses a process boundary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from demo.app import REPO_ROOT, TicketRequest, load_stream
from demo.report import Outcome

READY, GO = "ready", "go"


def run_workers(
    store: str,
    requests: list[TicketRequest],
    workers: int,
    *,
    threshold: float | None,
    base_url: str | None,
    data_path: Path,
) -> tuple[list[Outcome], float]:
    """Run ``requests`` across ``workers`` processes on ``store``; returns the outcomes in
    request order and the wall time from the common start to the last worker's end."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(workers):
            job = {
                "store": store,
                "threshold": threshold,
                "base_url": base_url,
                "data_path": str(data_path),
                "ids": [r.id for r in requests[i::workers]],
            }
            proc = subprocess.Popen(
                [sys.executable, "-m", "demo.fleet"],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            _send(proc, json.dumps(job))
        for proc in procs:  # every worker has loaded its model: none is charged for that
            _expect(proc, READY)
        started = time.perf_counter()
        for proc in procs:
            _send(proc, GO)
        outcomes = [Outcome(**row) for proc in procs for row in json.loads(_line(proc))]
        wall_time_s = time.perf_counter() - started
        for proc in procs:
            if proc.wait(timeout=120) != 0:
                raise RuntimeError(f"demo worker exited with code {proc.returncode}")
    finally:
        for proc in procs:  # only the workers started here, and only if still running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return sorted(outcomes, key=lambda o: o.id), wall_time_s


def _send(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"demo worker exited early with code {proc.wait(timeout=60)}")
    return line


def _expect(proc: subprocess.Popen[str], word: str) -> None:
    line = _line(proc).strip()
    if line != word:
        raise RuntimeError(f"demo worker said {line[:200]!r}, expected {word!r}")


def worker() -> None:
    """One worker: read the job, open the shared cache, wait for ``go``, ask, report."""
    import instructor
    from openai import OpenAI

    from demo.run import _warm_up, ask
    from semcache import SemanticCache

    job: dict[str, Any] = json.loads(sys.stdin.readline())
    wanted = set(job["ids"])
    requests = [r for r in load_stream(Path(job["data_path"])) if r.id in wanted]
    if job["base_url"]:
        openai_client = OpenAI(base_url=job["base_url"], api_key="stub", max_retries=0)
    else:
        openai_client = OpenAI()
    with SemanticCache(job["store"], threshold=job["threshold"]) as cache, openai_client:
        _warm_up(cache)
        client = cache.wrap(instructor.from_openai(openai_client))
        print(READY, flush=True)
        if sys.stdin.readline().strip() != GO:
            raise SystemExit("demo worker: the parent went away")
        outcomes = [dataclasses.asdict(ask(client, request)) for request in requests]
    print(json.dumps(outcomes), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    worker()
