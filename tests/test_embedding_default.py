"""The default embedders, bundled and tuned: ONNX int8 when it is installed, torch otherwise or on
request, and a torch fallback when the ONNX model cannot be made or loaded, so a cache never breaks
because of it. (The tuned model's own folder is ``test_embedding_tuned``'s.)

The default exports into ``$XDG_CACHE_HOME``, pointed at a temporary folder for this module (one
export, about 8 s on 2 cores) instead of the user's ``~/.cache``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np

# onnxruntime and onnx come with the dev extra: imported, not skipped, so a broken install fails.
import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import pytest
from pydantic import BaseModel

from semcache import DEFAULT_THRESHOLD, SemanticCache
from semcache.embedding import (
    DEFAULT_MODEL_NAME,
    EMBEDDER_ENV,
    SentenceTransformerEmbedder,
    resolve_embedder,
)
from semcache.embedding.onnx_export import file_name
from semcache.embedding.onnx_runtime import OnnxEmbedder
from semcache.embedding.resolve import BUNDLED_THRESHOLD, TUNED_THRESHOLD, default_threshold
from semcache.embedding.tuned import TUNED_MODEL_NAME
from semcache.errors import EmbedderError, UsageError

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "hi",
    "Where is my parcel?",
    "The office chair from order A-12034 is uncomfortable. Can I return it for a refund?",
    "¿Dónde está mi pedido? Lo pedí hace dos semanas.",
]


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def broken_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``$XDG_CACHE_HOME`` that is a file, so the export cannot create its folder."""
    home = tmp_path / "not-a-folder"
    home.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


@pytest.mark.usefixtures("xdg_cache")
def test_the_default_is_the_tuned_model_on_onnx_int8() -> None:
    model = resolve_embedder(None)
    assert isinstance(model, OnnxEmbedder) and model.quantize and model.name == TUNED_MODEL_NAME
    assert DEFAULT_THRESHOLD == TUNED_THRESHOLD == default_threshold(model.name)


@pytest.mark.usefixtures("xdg_cache")
def test_bundled_is_onnx_int8_under_torchs_name() -> None:
    model = resolve_embedder("bundled")
    assert isinstance(model, OnnxEmbedder) and model.quantize
    # The same name is what lets a file written by either be read by the other.
    assert model.name == SentenceTransformerEmbedder().name == DEFAULT_MODEL_NAME
    assert default_threshold(model.name) == BUNDLED_THRESHOLD


@pytest.mark.usefixtures("xdg_cache")
@pytest.mark.parametrize(
    ("choice", "kind", "quantize"),
    [
        ("torch", SentenceTransformerEmbedder, None),
        ("bundled", OnnxEmbedder, True),
        ("onnx", OnnxEmbedder, True),
        ("onnx-fp32", OnnxEmbedder, False),
        (" ONNX-FP32 ", OnnxEmbedder, False),
    ],
)
def test_the_environment_picks_the_runtime(
    monkeypatch: pytest.MonkeyPatch, choice: str, kind: type, quantize: bool | None
) -> None:
    monkeypatch.setenv(EMBEDDER_ENV, choice)
    model = resolve_embedder(None)
    assert type(model) is kind
    if quantize is not None:
        assert isinstance(model, OnnxEmbedder) and model.quantize is quantize
    # An explicit argument wins over the environment.
    assert type(resolve_embedder("torch")) is SentenceTransformerEmbedder
    assert isinstance(resolve_embedder("onnx-fp32"), OnnxEmbedder)


@pytest.mark.usefixtures("xdg_cache")
def test_an_unknown_environment_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMBEDDER_ENV, "tensorflow")
    with pytest.raises(UsageError, match="SEMCACHE_EMBEDDER='tensorflow'"):
        resolve_embedder(None)
    monkeypatch.setenv(EMBEDDER_ENV, "")  # empty is unset
    assert isinstance(resolve_embedder(None), OnnxEmbedder)


@pytest.mark.usefixtures("xdg_cache")
def test_without_onnxruntime_the_default_is_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an import sees when not installed
    for choice, name in ((None, TUNED_MODEL_NAME), ("bundled", DEFAULT_MODEL_NAME)):
        model = resolve_embedder(choice)
        assert type(model) is SentenceTransformerEmbedder and model.name == name


def test_a_new_cache_loads_no_model(xdg_cache: Path, tmp_path: Path) -> None:
    """The export waits for the first embedding: opening a cache stays fast and torch-free."""
    code = textwrap.dedent(
        """
        import sys
        from semcache import SemanticCache
        with SemanticCache(sys.argv[1]) as cache:
            print(type(cache.embedder).__name__, len(cache))
        heavy = {"torch", "transformers", "onnxruntime", "onnx", "sentence_transformers"}
        print(sorted(heavy & set(sys.modules)))
        """
    )
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "untouched")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "cache.db")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
        check=True,
    )
    assert done.stdout.split("\n")[:2] == ["OnnxEmbedder 0", "[]"], done.stderr
    assert not (tmp_path / "untouched").exists()


@pytest.mark.usefixtures("xdg_cache")
def test_a_torch_written_cache_is_hit_by_the_default(
    tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    db = tmp_path / "cache.db"
    with SemanticCache(db, embedder=embedder) as cache:  # torch, loaded once per test session
        cache.store(user("How do I reset my password?"), Answer, Answer(text="reset"))
    with SemanticCache(db) as cache:
        assert isinstance(cache.embedder, OnnxEmbedder)
        exact = cache.lookup(user("How do I reset my password?"), Answer)
        near = cache.lookup(user("How can I reset my password?"), Answer)
        assert cache.embedder.backend == "onnx-int8"
    assert exact is not None and exact.tier == "exact"
    assert near is not None and near.tier == "semantic" and near.value.text == "reset"


def test_an_unwritable_cache_folder_falls_back_to_torch(
    broken_cache_home: Path,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="semcache"):
        model = resolve_embedder("bundled")
        assert isinstance(model, OnnxEmbedder)
        results: list[np.ndarray] = []
        threads = [
            threading.Thread(target=lambda: results.append(model.embed(TEXTS))) for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(results) == 4 and model.backend == "fallback"
        for vectors in results:
            np.testing.assert_allclose(vectors, embedder.embed(TEXTS), atol=1e-6)
        assert model.fits("word " * 200) and not model.fits("word " * 300)
        assert model.load() == {} and not model.quantized
        # A whole cache on the fallback.
        with SemanticCache(tmp_path / "cache.db", embedder="bundled") as cache:
            cache.store(user("How do I reset my password?"), Answer, Answer(text="reset"))
            near = cache.lookup(user("How can I reset my password?"), Answer)
            assert near is not None and near.tier == "semantic"
    warned = [r for r in caplog.records if r.name == "semcache"]
    # One warning per embedder (the cache made a second one), naming the real cause.
    assert len(warned) == 2
    assert all("with SentenceTransformerEmbedder instead" in r.getMessage() for r in warned)
    assert "ONNX model cache in" in warned[0].getMessage()


def test_asked_for_by_name_onnx_fails_loudly(
    broken_cache_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(EmbedderError, match="ONNX model cache in"):
        resolve_embedder("onnx").embed(["hello"])
    monkeypatch.setenv(EMBEDDER_ENV, "onnx")
    with pytest.raises(EmbedderError, match="ONNX model cache in"):
        resolve_embedder(None).embed(["hello"])


def test_a_model_file_onnxruntime_cannot_load_falls_back_to_torch(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    embedder: SentenceTransformerEmbedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What a future exporter writing a graph this onnxruntime cannot run would look like: files
    whose checksums are right (so they are not made again) but that are not ONNX."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = resolve_embedder("bundled")
    assert isinstance(model, OnnxEmbedder)
    model.folder.mkdir(parents=True)
    for kind in ("fp32", "int8"):
        garbage = f"not an onnx {kind} model".encode()
        (model.folder / file_name(kind, garbage)).write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="semcache"):
        vectors = model.embed(TEXTS)
    np.testing.assert_allclose(vectors, embedder.embed(TEXTS), atol=1e-6)
    (warning,) = caplog.records
    assert "onnxruntime cannot load" in warning.getMessage()
    with pytest.raises(EmbedderError, match="onnxruntime cannot load"):
        OnnxEmbedder().embed(TEXTS)  # without a fallback
