"""README examples of the core run as written (other modules' tests run their own sections)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from .conftest import readme_block, readme_section


def test_events_example_runs(tmp_path: Path, embedder: Any, monkeypatch: Any) -> None:
    code = readme_block("Events and the audit log")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    cache = scope["cache"]

    class Answer(BaseModel):
        text: str

    cache.store([{"role": "user", "content": "Where is my parcel?"}], Answer, Answer(text="a"))
    assert cache.lookup([{"role": "user", "content": "Where's my parcel?"}], Answer) is not None
    cache.flush()
    sql = readme_block("Events and the audit log", "sql")
    rows = cache.db.connection().execute(sql).fetchall()
    assert rows and rows[0][1] == "Where's my parcel?" and rows[0][4] == "hit"
    cache.close()
    assert os.path.exists(tmp_path / "cache.db")


@pytest.mark.parametrize("command", ["make demo", "make test"])
def test_the_two_commands_are_documented(command: str) -> None:
    assert command in readme_section("The two commands")


def test_tuning_from_traffic_example_runs(tmp_path: Path, monkeypatch: Any) -> None:
    code = readme_block("Tuning on your own traffic")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)  # an empty cache: nothing to propose yet
    cache = scope["cache"]
    assert cache.settings.auto_tune and cache.settings.target_precision == 0.99
    assert cache.settings.near_miss_band == 0.05 and scope["changes"] == ()
    cache.close()
