"""Shared fixtures: a fake OpenAI HTTP transport that counts calls, real clients, one loaded model.

The provider is faked at the HTTP layer (``httpx.MockTransport``), so every test drives the real
``openai`` and ``instructor`` code and semcache's real store, embedder and index.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import instructor
import pytest
from openai import AsyncOpenAI, OpenAI

from semcache import SemanticCache
from semcache.embedding import EMBEDDER_ENV, SentenceTransformerEmbedder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

Answer = Callable[[dict[str, Any]], dict[str, Any]]


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_section(title: str) -> str:
    """The text of one ``## title`` section of README.md."""
    return README.read_text(encoding="utf-8").split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def readme_block(title: str, language: str = "python") -> str:
    """The first ``language`` code block of a README section, so tests run the docs as written."""
    match = re.search(rf"```{language}\n(.*?)```", readme_section(title), re.DOTALL)
    assert match, f"no {language} example under ## {title}"
    return match.group(1)


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body["messages"]):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def echo_answer(body: dict[str, Any]) -> dict[str, Any]:
    """Answer every request with the text it was asked about: a wrong hit is visible at once."""
    return {"text": last_user_text(body)}


class FakeProvider:
    """An OpenAI chat-completions endpoint answering with a tool call; counts the calls it gets."""

    def __init__(self, answer: Answer = echo_answer) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    @property
    def count(self) -> int:
        return len(self.calls)

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body)
        tool = body["tools"][0]["function"]["name"] if body.get("tools") else "answer"
        arguments = json.dumps(self.answer(body))
        n_prompt = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4 + 1
        usage = {"prompt_tokens": n_prompt, "completion_tokens": 7, "total_tokens": n_prompt + 7}
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": tool, "arguments": arguments},
        }
        if body.get("stream"):
            return self._stream(body, tool, arguments)
        return httpx.Response(
            200,
            json={
                "id": f"chatcmpl-{len(self.calls)}",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
                    }
                ],
                "usage": usage,
            },
        )

    def _stream(self, body: dict[str, Any], tool: str, arguments: str) -> httpx.Response:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            payload = {
                "id": "chatcmpl-stream",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(payload)}\n\n"

        head = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": tool, "arguments": ""},
        }
        events = [chunk({"role": "assistant", "tool_calls": [head]})]
        for i in range(0, len(arguments), 8):
            piece = {"index": 0, "function": {"arguments": arguments[i : i + 8]}}
            events.append(chunk({"tool_calls": [piece]}))
        events.append(chunk({}, "tool_calls"))
        events.append("data: [DONE]\n\n")
        return httpx.Response(
            200, content="".join(events).encode(), headers={"content-type": "text/event-stream"}
        )


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    """The bundled all-MiniLM-L6-v2, loaded once for the whole session."""
    model = SentenceTransformerEmbedder()
    model.embed(["warm up"])
    return model


@pytest.fixture(scope="module")
def xdg_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$XDG_CACHE_HOME`` for one test module, so the model exports and derived model folders of
    the default and tuned embedders go to a temporary folder instead of the user's ``~/.cache``
    (one export per module), and no ``SEMCACHE_EMBEDDER`` from the caller's shell."""
    home = tmp_path_factory.mktemp("xdg-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home))
        patch.delenv(EMBEDDER_ENV, raising=False)
        yield home


@pytest.fixture
def provider() -> FakeProvider:
    return FakeProvider()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cache.db"


@pytest.fixture
def cache(db_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[SemanticCache]:
    with SemanticCache(db_path, threshold=0.85, embedder=embedder) as c:
        yield c


def openai_client(provider: FakeProvider) -> OpenAI:
    transport = httpx.MockTransport(provider.handler)
    return OpenAI(
        api_key="sk-test", base_url="http://fake/v1", http_client=httpx.Client(transport=transport)
    )


def async_openai_client(provider: FakeProvider) -> AsyncOpenAI:
    transport = httpx.MockTransport(provider.handler)
    return AsyncOpenAI(
        api_key="sk-test",
        base_url="http://fake/v1",
        http_client=httpx.AsyncClient(transport=transport),
    )


@pytest.fixture
def client(cache: SemanticCache, provider: FakeProvider) -> Any:
    return cache.wrap(instructor.from_openai(openai_client(provider)))


@pytest.fixture
def aclient(cache: SemanticCache, provider: FakeProvider) -> Any:
    return cache.wrap(instructor.from_openai(async_openai_client(provider)))


@pytest.fixture(scope="session")
def template(
    tmp_path_factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
) -> Path:
    """A filled cache file, built once; tests get copies of it (``filled``)."""
    from .corpus import fill

    path = tmp_path_factory.mktemp("template") / "cache.db"
    with SemanticCache(path, threshold=0.85, embedder=embedder) as c:
        fill(c)
    return path


@pytest.fixture
def filled(
    template: Path, db_path: Path, embedder: SentenceTransformerEmbedder
) -> Iterator[SemanticCache]:
    """An open copy of the filled cache, private to the test."""
    from .corpus import open_copy

    with open_copy(template, db_path, embedder) as c:
        yield c


@pytest.fixture
def target(tmp_path: Path, embedder: SentenceTransformerEmbedder) -> Iterator[SemanticCache]:
    """An empty cache to import into."""
    with SemanticCache(tmp_path / "copy.db", threshold=0.85, embedder=embedder) as c:
        yield c


from .pgserver import pg_dsn, summarize_skips  # noqa: E402, F401  (the fixture, for every test)
from .pgvector_server import (  # noqa: E402, F401  (the fixtures, for every test)
    pgvector_server,
    vector_dsn,
)
from .pgvector_server import summarize_skips as summarize_pgvector_skips  # noqa: E402


def pytest_terminal_summary(terminalreporter: Any) -> None:
    summarize_skips(terminalreporter)
    summarize_pgvector_skips(terminalreporter)
