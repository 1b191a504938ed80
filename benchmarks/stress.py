"""Stress: N processes x M seconds of mixed traffic on one cache file, then a SIGKILL crash loop.

Prints a fixed table: operations per second held, errors seen by callers, entries lost, wrong
answers served. "Wrong" means an answer that is not the matched entry's own (an index pointing at
the wrong row) or an exact hit for another request; look-alike semantic matches are the threshold's
business and are measured by benchmarks/quality.py instead.

    python benchmarks/stress.py [--procs 4] [--seconds 20] [--kills 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # several processes share the cores

COLOURS = ["red", "blue", "green", "black", "white", "amber", "violet", "grey"]


class Answer(BaseModel):
    text: str


def text(worker: int, i: int) -> str:
    return f"Worker {worker} asks about invoice {i} for the {COLOURS[worker % 8]} account"


def paraphrase(worker: int, i: int) -> str:
    return f"worker {worker} is asking about invoice {i} for the {COLOURS[worker % 8]} account"


def owner_of(prompt: str) -> str:
    words = prompt.split()
    return f"{words[1]}:{words[5]}"


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def worker(path: str, me: int, n_procs: int, seconds: float, outdir: str) -> None:
    from semcache import SemanticCache

    cache = SemanticCache(path, threshold=0.85, verifier=None, busy_timeout=2.0)
    cache.embedder.embed(["load the model before the clock starts"])
    rng = random.Random(me)
    errors: list[str] = []
    wrong = written = reads = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            roll = rng.random()
            if roll < 0.3:
                cache.store(messages(text(me, written)), Answer, Answer(text=f"{me}:{written}"))
                written += 1
                continue
            p = rng.randrange(n_procs)
            prompt = text(p, rng.randrange(written + 1))
            if roll > 0.65:
                prompt = paraphrase(p, rng.randrange(written + 1))
            hit = cache.lookup(messages(prompt), Answer)
            reads += 1
            if hit is not None and hit.matched_prompt is not None:
                owner = owner_of(hit.matched_prompt)
                if hit.value.text != owner or (hit.tier == "exact" and owner_of(prompt) != owner):
                    wrong += 1
        except Exception as exc:
            errors.append(repr(exc))
    elapsed = time.monotonic() - start
    Path(outdir, f"done-{me}").write_text(json.dumps(written))
    while sum(Path(outdir, f"done-{k}").exists() for k in range(n_procs)) < n_procs:
        time.sleep(0.05)
    lost = 0
    for p in range(n_procs):
        for j in range(json.loads(Path(outdir, f"done-{p}").read_text())):
            hit = cache.lookup(messages(text(p, j)), Answer)
            lost += hit is None or hit.value.text != f"{p}:{j}"
    cache.close()
    result = {"ops": written + reads, "seconds": elapsed, "errors": errors, "wrong": wrong,
              "lost_seen_here": lost, "written": written}  # fmt: skip
    Path(outdir, f"result-{me}.json").write_text(json.dumps(result))


def crash_writer(path: str, start: int, log: str) -> None:
    from semcache import SemanticCache

    cache = SemanticCache(path, threshold=0.85, verifier=None)
    cache.embedder.embed(["warm"])
    with open(log, "a") as out:
        out.write("ready\n")
        out.flush()
        i = start
        while True:
            entry = cache.store(messages(text(7, i)), Answer, Answer(text=f"7:{i}"))
            out.write(f"{i} {entry}\n")
            out.flush()
            i += 1


def crash_loop(path: str, kills: int, workdir: str) -> dict[str, int]:
    from semcache import SemanticCache

    rng = random.Random(11)
    confirmed: dict[int, int] = {}
    ctx = mp.get_context("spawn")
    for k in range(kills):
        log = os.path.join(workdir, f"crash-{k}.log")
        proc = ctx.Process(target=crash_writer, args=(path, k * 1_000_000, log))
        proc.start()
        while not (os.path.exists(log) and "ready" in Path(log).read_text()):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.1, 1.0))
        os.kill(proc.pid or 0, signal.SIGKILL)
        proc.join()
        for line in Path(log).read_text().splitlines()[1:]:
            i, entry = line.split()
            confirmed[int(i)] = int(entry)
    lost = wrong = 0
    with SemanticCache(path, threshold=0.85, verifier=None) as cache:
        for i, entry_id in confirmed.items():
            hit = cache.lookup(messages(text(7, i)), Answer)
            lost += hit is None
            wrong += hit is not None and (hit.value.text != f"7:{i}" or hit.entry_id != entry_id)
    return {"kills": kills, "confirmed": len(confirmed), "lost": lost, "wrong": wrong}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "stress.db")
        from semcache import SemanticCache

        SemanticCache(path, verifier=None).close()
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=worker, args=(path, k, args.procs, args.seconds, tmp))
                 for k in range(args.procs)]  # fmt: skip
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        results: list[dict[str, Any]] = [
            json.loads(Path(tmp, f"result-{k}.json").read_text()) for k in range(args.procs)
        ]
        crash = crash_loop(os.path.join(tmp, "crash.db"), args.kills, tmp)
    ops = sum(r["ops"] for r in results)
    seconds = max(r["seconds"] for r in results)
    errors = sum(len(r["errors"]) for r in results)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"| stress ({args.procs} processes x {args.seconds:g} s, one file) | value |")
    print("|---|---:|")
    print(f"| operations (30% writes, 35% lookups, 35% paraphrase lookups) | {ops} |")
    print(f"| operations per second, all processes | {ops / seconds:.0f} |")
    print(f"| entries written | {sum(r['written'] for r in results)} |")
    print(f"| errors seen by callers | {errors} |")
    print(
        f"| entries lost (each process looks up every entry) | {sum(r['lost_seen_here'] for r in results)} |"
    )
    print(f"| wrong answers served | {sum(r['wrong'] for r in results)} |")
    print(
        f"| SIGKILL crash loop: kills / writes confirmed | {crash['kills']} / {crash['confirmed']} |"
    )
    print(f"| crash loop: confirmed entries lost / wrong | {crash['lost']} / {crash['wrong']} |")
    if errors:
        print("first errors:", [e for r in results for e in r["errors"]][:3])


if __name__ == "__main__":
    main()
