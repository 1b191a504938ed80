"""``memoize``: plain functions returning a Pydantic model, through the real model and SQLite."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from semcache import SemanticCache, UsageError, cache_hit
from semcache.integrations.memoize import memoize

from .conftest import readme_block


class Answer(BaseModel):
    text: str


class Calls:
    """Records the questions a decorated function was actually run for."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @property
    def count(self) -> int:
        return len(self.seen)


def make_answer(cache: SemanticCache, calls: Calls, **options: Any) -> Any:
    @memoize(cache, text="question", **options)
    def answer(question: str, *, tone: str = "plain") -> Answer:
        """Answer a support question."""
        calls.seen.append(question)
        return Answer(text=f"[{tone}] {question}")

    return answer


def test_exact_hit(cache: SemanticCache) -> None:
    calls = Calls()
    answer = make_answer(cache, calls)
    first = answer("How do I reset my password?")
    second = answer("How do I reset my password?")
    assert calls.count == 1
    assert second == first == Answer(text="[plain] How do I reset my password?")
    assert cache_hit(first) is None
    hit = cache_hit(second)
    assert hit is not None and hit.tier == "exact"


def test_paraphrase_is_a_semantic_hit(cache: SemanticCache) -> None:
    calls = Calls()
    answer = make_answer(cache, calls)
    answer("How do I reset my password?")
    served = answer("How can I reset my password?")
    assert calls.count == 1
    assert served.text == "[plain] How do I reset my password?"  # the stored answer
    hit = cache_hit(served)
    assert hit is not None and hit.tier == "semantic"
    assert 0.85 <= hit.similarity < 1.0
    assert hit.matched_prompt == "How do I reset my password?"


def test_an_unrelated_question_misses(cache: SemanticCache) -> None:
    calls = Calls()
    answer = make_answer(cache, calls)
    answer("How do I reset my password?")
    assert answer("What are your opening hours on Sunday?").text.endswith("Sunday?")
    assert calls.count == 2


def test_another_non_text_argument_never_hits(cache: SemanticCache) -> None:
    calls = Calls()
    answer = make_answer(cache, calls)
    answer("How do I reset my password?")
    formal = answer("How do I reset my password?", tone="formal")  # same text, exactly
    paraphrase = answer("How can I reset my password?", tone="formal")
    assert calls.count == 2
    assert formal.text == "[formal] How do I reset my password?"
    assert paraphrase.text == formal.text  # within the tone="formal" scope, a semantic hit
    assert answer("How do I reset my password?", tone="plain").text.startswith("[plain]")
    assert calls.count == 2


def test_defaults_are_part_of_the_key(cache: SemanticCache) -> None:
    calls = Calls()
    answer = make_answer(cache, calls)
    answer("How do I reset my password?")
    answer("How do I reset my password?", tone="plain")  # the default, spelled out
    assert calls.count == 1


async def test_async_function(cache: SemanticCache) -> None:
    calls = Calls()

    @memoize(cache, text="question")
    async def answer(question: str, *, tone: str = "plain") -> Answer:
        """Answer a support question, asynchronously."""
        calls.seen.append(question)
        return Answer(text=f"[{tone}] {question}")

    assert inspect.iscoroutinefunction(answer)
    first = await answer("How do I reset my password?")
    exact = await answer("How do I reset my password?")
    paraphrase = await answer("How can I reset my password?")
    other = await answer("How can I reset my password?", tone="formal")
    assert calls.count == 2
    # model_dump: two served values compare by their attached CacheHit too (see the report).
    assert exact.model_dump() == paraphrase.model_dump() == first.model_dump()
    hits = [cache_hit(exact), cache_hit(paraphrase)]
    assert [h.tier if h else None for h in hits] == ["exact", "semantic"]
    assert other.text == "[formal] How can I reset my password?"


def test_the_wrapper_keeps_name_docstring_and_signature(cache: SemanticCache) -> None:
    answer = make_answer(cache, Calls())
    assert answer.__name__ == "answer"
    assert answer.__doc__ == "Answer a support question."
    assert (
        str(inspect.signature(answer)) == "(question: 'str', *, tone: 'str' = 'plain') -> 'Answer'"
    )


def test_an_argument_without_a_key_runs_uncached(
    cache: SemanticCache, caplog: pytest.LogCaptureFixture
) -> None:
    calls = Calls()

    @memoize(cache, text="question")
    def answer(question: str, client: object) -> Answer:
        calls.seen.append(question)
        return Answer(text=question)

    client = object()
    with caplog.at_level(logging.DEBUG, logger="semcache"):
        assert answer("How do I reset my password?", client).text == "How do I reset my password?"
        answer("How do I reset my password?", client)
    assert calls.count == 2 and len(cache) == 0
    assert "not cached" in caplog.text
    answer_nan = memoize(cache, text="question")(_scored)
    answer_nan("hello", float("nan"))
    answer_nan("hello", float("nan"))
    assert len(cache) == 0


def _scored(question: str, weight: float) -> Answer:
    return Answer(text=f"{question} {weight}")


def test_a_text_function_names_the_arguments_it_reads(cache: SemanticCache) -> None:
    calls = Calls()

    @memoize(cache, text=lambda title, body: f"{title}\n{body}")
    def triage(title: str, body: str, product: str) -> Answer:
        calls.seen.append(title)
        return Answer(text=f"{product}: {title}")

    triage("Password reset", "How do I reset my password?", "web")
    served = triage("Password reset", "How can I reset my password?", "web")
    assert calls.count == 1 and cache_hit(served) is not None
    triage("Password reset", "How do I reset my password?", "mobile")
    assert calls.count == 2


def test_a_text_that_is_not_a_string_is_exact_only(cache: SemanticCache) -> None:
    calls = Calls()

    @memoize(cache, text="order")
    def lookup(order: int) -> Answer:
        calls.seen.append(str(order))
        return Answer(text=f"order {order}")

    assert lookup(10578).text == "order 10578"
    assert lookup(10578).text == "order 10578"
    assert lookup(10587).text == "order 10587"  # a look-alike is never a semantic hit
    assert calls.count == 2


def test_an_argument_named_like_a_transport_setting_is_still_keyed(cache: SemanticCache) -> None:
    """keys.py leaves ``timeout``, ``api_key``... out of an LLM request; not out of a function's."""
    calls = Calls()

    @memoize(cache, text="question")
    def answer(question: str, timeout: int, api_key: str) -> Answer:
        calls.seen.append(question)
        return Answer(text=f"{timeout} {api_key}")

    assert answer("hello", 1, "a").text == "1 a"
    assert answer("hello", 2, "a").text == "2 a"
    assert answer("hello", 2, "b").text == "2 b"
    assert calls.count == 3


def test_functions_do_not_share_entries(cache: SemanticCache) -> None:
    calls = Calls()

    @memoize(cache, text="question")
    def first(question: str) -> Answer:
        calls.seen.append("first")
        return Answer(text="first")

    @memoize(cache, text="question")
    def second(question: str) -> Answer:
        calls.seen.append("second")
        return Answer(text="second")

    assert first("hello").text == "first"
    assert second("hello").text == "second"
    assert calls.seen == ["first", "second"]


def test_namespace_and_threshold(cache: SemanticCache) -> None:
    calls = Calls()
    v1 = make_answer(cache, calls, namespace="v1")
    v2 = make_answer(cache, calls, namespace="v2")
    v1("How do I reset my password?")
    v2("How do I reset my password?")
    v1("How do I reset my password?")
    assert calls.count == 2
    strict = make_answer(cache, calls, namespace="strict", threshold=0.999)
    strict("How do I reset my password?")
    strict("How can I reset my password?")  # similarity ~0.99: below this function's threshold
    assert calls.count == 4


def test_the_key_is_taken_before_the_function_runs(cache: SemanticCache) -> None:
    calls = Calls()

    @memoize(cache, text="question")
    def tagged(question: str, tags: list[str]) -> Answer:
        calls.seen.append(question)
        tags.append("seen")  # a mutation must not change what the answer is stored under
        return Answer(text=",".join(tags))

    tagged("hello", ["a"])
    assert tagged("hello", ["a"]).text == "a,seen"
    assert calls.count == 1


def test_a_result_of_the_wrong_type_is_returned_not_stored(cache: SemanticCache) -> None:
    @memoize(cache, text="question")
    def wrong(question: str) -> Answer:
        return {"text": question}  # type: ignore[return-value]

    result: Any = wrong("hello")
    assert result == {"text": "hello"}
    assert len(cache) == 0


def test_decoration_mistakes_are_usage_errors(cache: SemanticCache) -> None:
    def untyped(question: str):  # type: ignore[no-untyped-def]
        return Answer(text=question)

    def returns_dict(question: str) -> dict[str, str]:
        return {}

    def fine(question: str) -> Answer:
        return Answer(text=question)

    with pytest.raises(UsageError, match="no return annotation"):
        memoize(cache, text="question")(untyped)
    with pytest.raises(UsageError, match="Pydantic model"):
        memoize(cache, text="question")(returns_dict)
    with pytest.raises(UsageError, match="not a parameter"):
        memoize(cache, text="prompt")(fine)
    with pytest.raises(UsageError, match="names none"):
        memoize(cache, text=lambda *args, **kwargs: str(args))(fine)
    with pytest.raises(UsageError, match="unknown: prompt"):
        memoize(cache, text=lambda prompt: prompt)(fine)
    with pytest.raises(UsageError):
        memoize(cache, text="question", threshold=1.5)
    with pytest.raises(UsageError):
        memoize(cache, text="question", namespace="")


def test_readme_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(readme_block("Caching plain functions"), namespace)  # the bundled model, offline
    namespace["cache"].close()
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "computing: How do I reset my password?",
        "computing: How can I reset my password?",
    ]
    assert (tmp_path / "cache.db").exists()
