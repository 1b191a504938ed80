"""Shared test data for the export, import, admin, check and CLI tests: a small filled cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from semcache import SemanticCache

MODEL = "gpt-4o-mini"
SYSTEM = "You answer support questions."


class Ticket(BaseModel):
    text: str


class Order(BaseModel):
    order_id: str


TICKETS = [
    "Cancel my subscription",
    "Where is my parcel?",
    "How do I reset my password?",
    "Can I get a refund for order A-10578?",
    "Ich möchte mein Abo kündigen 🙏",
]
# Queries whose hits (or misses) the copy must reproduce: exact, paraphrase, unrelated.
QUERIES = [
    *TICKETS,
    "Please cancel my subscription",
    "I forgot my password, how can I reset it?",
    "where's my parcel",
    "What is the capital of France?",
]


def msgs(text: str, system: str | None = None) -> list[dict[str, Any]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": text}]


def image_msgs(text: str) -> list[dict[str, Any]]:
    """A multimodal request: served by the exact tier only, so its entry has no embedding."""
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    return [{"role": "user", "content": [{"type": "text", "text": text}, part]}]


def completion(n: int) -> dict[str, Any]:
    usage = {"prompt_tokens": n, "completion_tokens": 7, "total_tokens": n + 7}
    return {"id": f"c{n}", "choices": [{"message": {"content": None}}], "usage": usage}


def fill(cache: SemanticCache) -> None:
    """Entries in several scopes (models, schemas, a system prompt, a second namespace), an
    exact-only entry, non-ASCII text, completions with usage, and some recorded hits."""
    for i, text in enumerate(TICKETS):
        answer = Ticket(text=text.lower())
        cache.store(msgs(text), Ticket, answer, completion=completion(i), model=MODEL)
        cache.store(msgs(text, SYSTEM), Ticket, Ticket(text=f"sys:{i}"), model=MODEL)
    cache.store(msgs("Order A-1 please"), Order, Order(order_id="A-1"), model="gpt-4o")
    cache.store(image_msgs("what is in this picture"), Ticket, Ticket(text="a cat"), model=MODEL)
    assert cache.db.path is not None
    with SemanticCache(cache.db.path, embedder=cache.embedder, namespace="tenant-b") as other:
        other.store(msgs("Cancel my subscription"), Ticket, Ticket(text="tenant b"), model=MODEL)
    for query in ("Cancel my subscription", "Please cancel my subscription", "Where is my parcel?"):
        assert cache.lookup(msgs(query), Ticket, model=MODEL) is not None
    cache.flush()


def records(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "entries.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def count(cache: SemanticCache) -> int:
    return int(cache.db.connection().execute("SELECT count(*) FROM entries").fetchone()[0])


def open_copy(template: Path, path: Path, embedder: Any) -> SemanticCache:
    """A cache on a copy of ``template``: filling one costs a dozen embeddings, copying nothing."""
    for suffix in ("", "-wal"):
        source = template.with_name(template.name + suffix)
        if source.exists():
            shutil.copyfile(source, path.with_name(path.name + suffix))
    return SemanticCache(path, threshold=0.85, embedder=embedder)
