"""Where a cache lives: a path is a SQLite file; a URL is never taken for a file name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from semcache import SemanticCache, UsageError
from semcache.cli import main
from semcache.errors import StoreUnavailableError
from semcache.integrations.instructor_cache import SQLiteCache
from semcache.storage import SCHEMES, open_store

URLS = [
    "mysql://root@localhost/cache",
    "redis://localhost:6379/0",
    "file:///tmp/cache.db",
]


class Answer(BaseModel):
    text: str


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("url", URLS)
def test_an_unknown_scheme_is_a_usage_error_and_creates_nothing(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    scheme = url.split("://")[0]
    with pytest.raises(UsageError, match=f"{scheme}://") as caught:
        SemanticCache(url, embedder=embedder)
    assert "sqlite://" in str(caught.value) and "postgresql://" in str(caught.value)
    assert "file path" in str(caught.value)
    with pytest.raises(UsageError, match="sqlite://"):
        open_store(url)
    with pytest.raises(UsageError, match="sqlite://"):
        SQLiteCache(url)
    assert _tree(tmp_path) == []  # no postgresql:/ folder, no SQLite file


def test_fail_open_does_not_hide_a_wrong_location(tmp_path: Path, embedder: Any) -> None:
    """fail_open is for a damaged file; a location that can never work is the caller's mistake."""
    with pytest.raises(UsageError):
        SemanticCache("mysql://host/db", embedder=embedder, fail_open=True)


def test_the_cli_names_the_supported_schemes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["stats", "mysql://root@127.0.0.1:5432/db"])
    assert result.exit_code == 1
    assert "postgresql://" in result.output and "sqlite://" in result.output
    assert _tree(tmp_path) == []


@pytest.mark.parametrize(
    "url", ["postgresql://u:pw-XYZ@127.0.0.1:1/db", "postgres://u:pw-XYZ@h/db"]
)
def test_tools_given_a_postgresql_url_never_echo_its_password_nor_create_files(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """open_store opens SQLite files only, and says so; instructor's cache= adapter and the CLI
    take the URL (tests/test_cli_postgres.py), and here reach no server: one line, no password."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="sqlite://") as caught:
        open_store(url)
    assert "pw-XYZ" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(StoreUnavailableError, match="unreachable") as down:
        SQLiteCache(url)
    assert "pw-XYZ" not in str(down.value) and "***" in str(down.value)
    result = CliRunner().invoke(main, ["stats", url])
    assert result.exit_code == 1 and "unreachable" in result.output
    assert "pw-XYZ" not in result.output and len(result.output.strip().splitlines()) == 1
    assert _tree(tmp_path) == []


def test_sqlite_urls_name_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder: Any
) -> None:
    assert SCHEMES == ("sqlite", "postgresql", "postgres")
    monkeypatch.chdir(tmp_path)
    absolute = tmp_path / "abs.db"
    with SemanticCache("sqlite:///relative.db", embedder=embedder) as cache:
        cache.store([{"role": "user", "content": "hi"}], Answer, Answer(text="hello"), model="m")
    with SemanticCache(f"sqlite:///{absolute}", embedder=embedder) as cache:
        assert len(cache) == 0
    assert (tmp_path / "relative.db").is_file() and absolute.is_file()
    with SemanticCache(tmp_path / "relative.db", embedder=embedder) as cache:
        assert len(cache) == 1
    for bad in ("sqlite://relative.db", "sqlite:///"):
        with pytest.raises(UsageError, match="sqlite:///"):
            open_store(bad)


def test_a_windows_drive_or_colon_in_a_name_is_still_a_path(tmp_path: Path) -> None:
    for name in ("c:cache.db", "cache:v2.db"):
        store = open_store(tmp_path / name)
        store.close()
        assert (tmp_path / name).is_file()
