"""Fleet mode under crashes: a node SIGKILLed mid-write, and the database server restarted.

The restart runs on a private throwaway cluster (initdb in a temporary folder, its own port),
never on the shared server. Waits poll for progress with generous deadlines; nothing is timed.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import fleet_node
from .fleet_node import Answer, open_node, paraphrase, question, read_log
from .pgserver import dsn_for, require_server

BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], bool], what: str, deadline: float = 180.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def start_nodes(dsn: str, folder: Path, nodes: int) -> list[multiprocessing.process.BaseProcess]:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(
            target=fleet_node.write_until,
            args=(dsn, n, str(folder / f"node{n}.log"), str(folder / "stop")),
        )
        for n in range(nodes)
    ]
    for worker in workers:
        worker.start()
    return workers


def confirmed_in_node(folder: Path, node: int) -> list[int]:
    return read_log(str(folder / f"node{node}.log"))[0]


def confirmed_in(folder: Path, nodes: int) -> tuple[list[int], list[str]]:
    items: list[int] = []
    problems: list[str] = []
    for n in range(nodes):
        ok, bad = read_log(str(folder / f"node{n}.log"))
        items += ok
        problems += bad
    return items, problems


def assert_all_found(dsn: str, items: list[int]) -> None:
    """A fresh node finds every confirmed item through both tiers, each with its own answer."""
    with open_node(dsn) as checker:
        for item in items:
            for messages in (question(item), paraphrase(item)):
                hit = checker.lookup(messages, Answer, model="m")
                assert hit is not None, item
                assert hit.value.text == f"answer {item}"


def test_a_node_killed_mid_write_loses_no_confirmed_write_and_blocks_no_one(
    pg_dsn: str, tmp_path: Path
) -> None:
    with open_node(pg_dsn):
        pass  # migrated before the nodes start
    workers = start_nodes(pg_dsn, tmp_path, 2)
    wait_for(
        lambda: all(len(confirmed_in_node(tmp_path, n)) >= 20 for n in range(2)),
        "writes from both nodes",
    )
    assert workers[0].pid is not None
    os.kill(workers[0].pid, signal.SIGKILL)  # mid-write, most likely: it writes all the time
    workers[0].join()
    before = len(confirmed_in(tmp_path, 2)[0])
    wait_for(lambda: len(confirmed_in(tmp_path, 2)[0]) >= before + 20, "the survivor to go on")
    (tmp_path / "stop").touch()
    workers[1].join(timeout=120)
    items, problems = confirmed_in(tmp_path, 2)
    assert problems == []
    assert_all_found(pg_dsn, items)


@pytest.fixture
def private_server() -> Iterator[tuple[str, Callable[[], None]]]:
    """A throwaway PostgreSQL cluster on a free port, and a function that restarts it."""
    require_server()  # the same skip-or-fail rule as every PostgreSQL test
    if not (BIN / "initdb").exists() or os.geteuid() != 0:
        pytest.skip(
            "PostgreSQL tests skipped: a private cluster needs root and PostgreSQL 15's binaries"
        )
    # Not under pytest's temporary folder: the postgres user cannot enter root's 0700 folders.
    folder = Path(tempfile.mkdtemp(prefix="semcache-cluster-"))
    shutil.chown(folder, "postgres")
    data, log = folder / "data", folder / "server.log"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def pg(*args: str) -> None:
        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr + done.stdout

    pg(str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=on"
    ctl = [str(BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options]
    pg(*ctl, "start")
    try:
        yield (
            f"postgresql://postgres@127.0.0.1:{port}/postgres",
            lambda: pg(*ctl, "-m", "fast", "restart"),
        )
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *ctl, "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_a_server_restart_mid_run_loses_no_confirmed_write_and_raises_nothing(
    private_server: tuple[str, Callable[[], None]], tmp_path: Path
) -> None:
    server, restart = private_server
    dsn = dsn_for("public", server)
    with open_node(dsn):
        pass
    workers = start_nodes(dsn, tmp_path, 3)
    try:
        # Every node has opened its cache and written before the restart: a server that is down
        # when a cache opens is an error by design (or, with fail_open, a disabled cache).
        wait_for(
            lambda: all(len(confirmed_in_node(tmp_path, n)) >= 10 for n in range(3)),
            "writes by every node before the restart",
        )
        restart()
        after = len(confirmed_in(tmp_path, 3)[0])
        wait_for(lambda: len(confirmed_in(tmp_path, 3)[0]) >= after + 30, "writes after it")
    finally:
        (tmp_path / "stop").touch()
        for worker in workers:
            worker.join(timeout=120)
    items, problems = confirmed_in(tmp_path, 3)
    assert problems == []  # no exception reached a caller, no wrong answer was served
    assert [w.exitcode for w in workers] == [0, 0, 0]
    assert_all_found(dsn, items)
