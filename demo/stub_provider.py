"""A local OpenAI-compatible stand-in for ``POST /v1/chat/completions``.

The demo has to run offline and still exercise the real network path (the ``openai`` SDK, its
HTTP client, instructor's tool-call parsing), so it talks to this server on loopback instead of
the real API. The server knows the right ``Ticket`` for every text in the data file, answers the
way a model answers in instructor's TOOLS mode, and sleeps like a provider does, which is what
makes cache hits measurably cheaper than provider calls.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

COMPLETIONS_PATH = "/v1/chat/completions"
JITTER_FRACTION = 0.3  # up to +30 % of the base latency, fixed per text so runs are repeatable


def estimate_tokens(text: str) -> int:
    """Roughly count tokens as a quarter of the characters, the usual rule of thumb for English."""
    return max(1, len(text) // 4)


def simulated_latency(text: str, latency_s: float) -> float:
    """Base latency plus a jitter derived from the text, so percentiles are not all identical."""
    fraction = (zlib.crc32(text.encode("utf-8")) % 1000) / 1000
    return latency_s * (1 + JITTER_FRACTION * fraction)


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message; content may be a string or a list of text parts."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    raise KeyError("no user message in the request")


def build_completion(request: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
    """Shape ``answer`` as the ChatCompletion a model returns for this request.

    With ``tools`` (instructor's default TOOLS mode) the answer is the arguments of a call to the
    requested tool; without them it is the message content, which covers the JSON modes.
    """
    arguments = json.dumps(answer)
    message: dict[str, Any] = {"role": "assistant", "content": None}
    tools = request.get("tools") or []
    if tools:
        message["tool_calls"] = [
            {
                "id": f"call_{zlib.crc32(arguments.encode('utf-8')):08x}",
                "type": "function",
                "function": {"name": tools[0]["function"]["name"], "arguments": arguments},
            }
        ]
        finish_reason = "tool_calls"
    else:
        message["content"] = arguments
        finish_reason = "stop"
    prompt_text = json.dumps(request.get("messages", [])) + json.dumps(tools)
    prompt_tokens = estimate_tokens(prompt_text)
    completion_tokens = estimate_tokens(arguments)
    return {
        "id": f"chatcmpl-stub-{time.monotonic_ns():x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "stub"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _error_body(message: str, code: str) -> dict[str, Any]:
    """An error in OpenAI's envelope, so the SDK raises its usual typed exception."""
    return {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }


class _StubServer(ThreadingHTTPServer):
    """The HTTP server plus the state its handler threads share."""

    daemon_threads = True

    def __init__(self, answers: dict[str, dict[str, Any]], latency_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers = answers
        self.latency_s = latency_s
        self.calls = 0
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    """Serves the one endpoint instructor uses; everything else is a 404."""

    server: _StubServer
    protocol_version = "HTTP/1.1"  # keep-alive, like a real provider, so timings exclude setup
    timeout = 10  # idle keep-alive connections give their thread back instead of hanging
    # Headers and body leave in one segment with Nagle off; otherwise every response waits ~40 ms
    # for a delayed ACK, which would pose as provider latency the demo did not ask for.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: request lines would scribble over the demo's progress bar."""

    def _send_json(self, status: HTTPStatus, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        """Answer a chat completion from the table, after the simulated provider latency."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != COMPLETIONS_PATH:
            self._send_json(HTTPStatus.NOT_FOUND, _error_body(f"no route {self.path}", "not_found"))
            return
        with self.server.lock:
            self.server.calls += 1
        try:
            request = json.loads(raw)
            text = _last_user_text(request["messages"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._send_json(HTTPStatus.BAD_REQUEST, _error_body(f"bad request: {exc}", "bad_json"))
            return
        answer = self.server.answers.get(text)
        if answer is None:
            body = _error_body(f"the stub has no answer for this text: {text[:80]!r}", "unknown")
            self._send_json(HTTPStatus.BAD_REQUEST, body)
            return
        time.sleep(simulated_latency(text, self.server.latency_s))
        self._send_json(HTTPStatus.OK, build_completion(request, answer))

    def do_GET(self) -> None:
        """Only POST is served; a GET gets the same error envelope as any unknown route."""
        self._send_json(HTTPStatus.NOT_FOUND, _error_body(f"no route {self.path}", "not_found"))


class StubProvider:
    """Runs the stand-in server on an ephemeral loopback port for the duration of a ``with``.

    ``base_url`` is what to pass to ``OpenAI(base_url=...)``; ``calls`` counts the completion
    requests that reached the server, which is the number the cache is trying to drive down.
    """

    def __init__(self, answers: dict[str, dict[str, Any]], latency_s: float = 0.35) -> None:
        if latency_s < 0:
            raise ValueError("latency_s must be >= 0")
        self._answers = answers
        self._latency_s = latency_s
        self._server: _StubServer | None = None
        self._thread: threading.Thread | None = None
        self._final_calls = 0

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL of the running server, ending in ``/v1``."""
        host, port = self._running().server_address[:2]
        return f"http://{host!s}:{port}/v1"

    @property
    def calls(self) -> int:
        """How many completion requests the server has received so far (kept after exit)."""
        if self._server is None:
            return self._final_calls
        with self._server.lock:
            return self._server.calls

    def _running(self) -> _StubServer:
        if self._server is None:
            raise RuntimeError("the stub provider is not running; use it in a `with` block")
        return self._server

    def __enter__(self) -> StubProvider:
        self._server = _StubServer(self._answers, self._latency_s)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="stub-provider", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        server, thread = self._running(), self._thread
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._final_calls = server.calls
        self._server = None
        self._thread = None
