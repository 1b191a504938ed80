"""The tuned embedder: the bundled model plus a small shipped part, derived once per machine, under
a name of its own, and a cache that keeps the model its file was made with.

Everything is derived and exported into a temporary ``$XDG_CACHE_HOME`` for this module.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel
from safetensors.numpy import load_file, save_file

from semcache import SemanticCache
from semcache.embedding import DEFAULT_MODEL_NAME, EMBEDDER_ENV, SentenceTransformerEmbedder
from semcache.embedding import resolve as resolve_module
from semcache.embedding.base import bundled_model_path
from semcache.embedding.onnx_runtime import OnnxEmbedder
from semcache.embedding.resolve import (
    BUNDLED_THRESHOLD,
    TUNED_SUBSTITUTION_BELOW,
    TUNED_THRESHOLD,
    default_threshold,
    for_recorded,
    resolve_embedder,
)
from semcache.embedding.tuned import (
    SHIPPED_PART,
    SHIPPED_SHA256,
    TUNED_MODEL_NAME,
    tuned_model_path,
    tuned_name,
)
from semcache.errors import ConfigMismatchError, EmbedderError
from semcache.ops import admin, traffic
from semcache.verifiers import RuleVerifier
from semcache.verifiers.rules import SUBSTITUTION_BELOW

TEXTS = [
    "Where is my parcel?",
    "How do I reset my card PIN?",
    "I forgot my PIN, how can I change it?",
]


class Answer(BaseModel):
    text: str


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tuned_onnx(xdg_cache: Path) -> OnnxEmbedder:
    model = resolve_embedder("tuned")
    assert isinstance(model, OnnxEmbedder)
    model.load()
    return model


def test_the_shipped_part_is_small_and_pinned_to_its_name() -> None:
    """A new part must come with a new name: cache files record the name, and two parts' vectors
    must never share a file."""
    data = SHIPPED_PART.read_bytes()
    assert len(data) < 1_000_000
    assert hashlib.sha256(data).hexdigest() == SHIPPED_SHA256, "new part: bump TUNED_MODEL_NAME"
    assert tuned_name(SHIPPED_PART) == TUNED_MODEL_NAME
    shipped = load_file(str(SHIPPED_PART))
    assert all(k.endswith("bias") or "LayerNorm" in k for k in shipped)


def test_the_folder_is_derived_once_and_remade_when_damaged(tmp_path: Path) -> None:
    folder = tuned_model_path(tmp_path)
    weights = folder / "model.safetensors"
    first = weights.stat().st_mtime_ns
    assert tuned_model_path(tmp_path) == folder and weights.stat().st_mtime_ns == first
    shipped = load_file(str(SHIPPED_PART))
    derived = load_file(str(weights))
    bundled = load_file(str(Path(bundled_model_path()) / "model.safetensors"))
    assert set(derived) == set(bundled)
    for name, value in derived.items():  # the shipped values in, everything else untouched
        np.testing.assert_array_equal(value, shipped.get(name, bundled[name]))
    whole = weights.read_bytes()
    with open(weights, "r+b") as f:  # a damaged copy (a disk error, a killed writer)
        f.seek(200_000)
        f.write(b"\0" * 64)
    assert tuned_model_path(tmp_path) == folder
    assert weights.read_bytes() == whole  # made again, not just found
    np.testing.assert_array_equal(load_file(str(weights))[name], derived[name])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_part_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    part = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.output.dense.bias": np.zeros(7, np.float32)}, str(part))
    assert tuned_name(part).startswith(TUNED_MODEL_NAME + "@")
    with pytest.raises(EmbedderError, match="does not fit the bundled model"):
        tuned_model_path(tmp_path, part=part)


def test_onnx_and_torch_give_the_tuned_vectors_under_one_name(tuned_onnx: OnnxEmbedder) -> None:
    torch_model = SentenceTransformerEmbedder(name=TUNED_MODEL_NAME, folder=tuned_model_path)
    assert tuned_onnx.name == torch_model.name == TUNED_MODEL_NAME
    assert tuned_onnx.backend == "onnx-int8"
    onnx_vectors, torch_vectors = tuned_onnx.embed(TEXTS), torch_model.embed(TEXTS)
    assert np.min(np.sum(onnx_vectors * torch_vectors, axis=1)) > 0.99
    bundled = resolve_embedder("torch").embed(TEXTS)
    agreement = np.sum(torch_vectors * bundled, axis=1)
    assert agreement.min() > 0.7 and agreement.max() < 0.99  # near the model it was tuned from


def test_a_cache_keeps_the_model_it_was_made_with(
    tuned_onnx: OnnxEmbedder,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whichever model is the default, ``embedder=None`` opens a file with the bundled model it
    records, so upgrading semcache never makes an existing cache fail to open."""
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    with SemanticCache(old, embedder=embedder) as cache:  # the bundled model
        cache.store(user("How do I reset my password?"), Answer, Answer(text="reset"))
    with SemanticCache(new, embedder=tuned_onnx) as cache:
        cache.store(user("How do I reset my password?"), Answer, Answer(text="reset"))
    for default in ("bundled", "tuned"):
        monkeypatch.setattr(resolve_module, "DEFAULT_EMBEDDER", default)
        for db, name in ((old, DEFAULT_MODEL_NAME), (new, TUNED_MODEL_NAME)):
            with SemanticCache(db) as cache:
                assert cache.embedder.name == name
                assert cache.threshold == (
                    TUNED_THRESHOLD if name == TUNED_MODEL_NAME else BUNDLED_THRESHOLD
                )
                near = cache.lookup(user("How can I reset my password?"), Answer)
                assert near is not None and near.tier == "semantic"
        with SemanticCache(tmp_path / f"fresh-{default}.db") as cache:
            expected = TUNED_MODEL_NAME if default == "tuned" else DEFAULT_MODEL_NAME
            assert cache.embedder.name == expected
            assert cache.threshold == default_threshold(expected)
    assert for_recorded(None) is None and for_recorded("some/model") == "some/model"
    # Asked for explicitly, another model is still refused, as before.
    with pytest.raises(ConfigMismatchError, match="created with embedder_name"):
        SemanticCache(old, embedder=tuned_onnx)
    monkeypatch.setenv(EMBEDDER_ENV, "tuned")
    with pytest.raises(ConfigMismatchError):
        SemanticCache(old)


def test_an_unwritable_cache_folder_derives_in_the_temporary_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "not-a-folder"
    home.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with caplog.at_level(logging.WARNING, logger="semcache"):
        folder = tuned_model_path()
    assert folder.parent.parent == tmp_path / "tmp" and (folder / "model.safetensors").exists()
    assert "deriving the tuned model in" in caplog.text


def test_the_default_threshold_is_the_models_own(
    tuned_onnx: OnnxEmbedder, tmp_path: Path, embedder: SentenceTransformerEmbedder
) -> None:
    """Two models put a pair at different similarities: without ``threshold=`` a cache serves at
    its model's default, and so do the tools that read a file without a cache."""
    stored, near = "How do I reset my password?", "Can you help me reset my password?"
    a, b = tuned_onnx.embed([stored, near])
    assert BUNDLED_THRESHOLD < float(a @ b) < TUNED_THRESHOLD  # the pair this test needs
    tuned_db, bundled_db = tmp_path / "tuned.db", tmp_path / "bundled.db"
    with SemanticCache(tuned_db, embedder=tuned_onnx, verifier=None) as cache:
        assert cache.threshold == cache.settings.threshold == TUNED_THRESHOLD
        cache.store(user(stored), Answer, Answer(text="reset"))
        assert cache.lookup(user(near), Answer) is None
        assert set(traffic.current_thresholds(cache.db).values()) == {TUNED_THRESHOLD}
        (found,) = admin.nearest(cache.db, tuned_onnx, near, k=1)
        assert (found.threshold, found.verdict) == (TUNED_THRESHOLD, "miss")
    # Given explicitly, a threshold wins over the model's.
    with SemanticCache(tuned_db, verifier=None, threshold=BUNDLED_THRESHOLD) as cache:
        hit = cache.lookup(user(near), Answer)
        assert hit is not None and hit.tier == "semantic" and cache.threshold == BUNDLED_THRESHOLD
    with SemanticCache(bundled_db, embedder=embedder) as cache:
        assert cache.threshold == BUNDLED_THRESHOLD
        cache.store(user(stored), Answer, Answer(text="reset"))
        assert set(traffic.current_thresholds(cache.db).values()) == {BUNDLED_THRESHOLD}


def test_the_default_verifier_gates_substitutions_on_the_models_scale(
    tuned_onnx: OnnxEmbedder, tmp_path: Path
) -> None:
    """The rules check one-word substitutions only below a similarity; the tuned model scores
    pairs higher, so its gate is higher too: "tablet" for "e-reader" at about 0.92 is refused."""
    stored = "The tablet from order A-12388 is stuck on the logo screen and keeps restarting."
    asked = "The e-reader from order A-12388 is stuck on the logo screen and keeps restarting."
    a, b = tuned_onnx.embed([stored, asked])
    assert SUBSTITUTION_BELOW < float(a @ b) < TUNED_SUBSTITUTION_BELOW  # the pair this needs
    with SemanticCache(tmp_path / "cache.db", embedder=tuned_onnx) as cache:
        assert isinstance(cache.verifier, RuleVerifier)
        assert cache.verifier.substitution_below == TUNED_SUBSTITUTION_BELOW
        cache.store(user(stored), Answer, Answer(text="tablet"))
        assert cache.lookup(user(asked), Answer) is None
    # The bundled model's gate would have served it.
    with SemanticCache(tmp_path / "cache.db", embedder=tuned_onnx, verifier=RuleVerifier()) as c:
        hit = c.lookup(user(asked), Answer)
        assert hit is not None and hit.value.text == "tablet"
