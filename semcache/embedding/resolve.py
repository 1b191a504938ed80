"""Turning ``SemanticCache(embedder=...)`` into an ``Embedder``: the default and the named runtimes.

The default runs the bundled all-MiniLM-L6-v2 on ONNX Runtime (``onnx_runtime``) when onnxruntime
is installed, and on torch (``torch_runtime``) otherwise; both give the same vectors under the same
name, so a cache file written by one is read by the other. ``SEMCACHE_EMBEDDER`` picks one for a
whole deployment. Nothing is loaded here: every runtime loads its model on the first embedding.
"""

from __future__ import annotations

import os
from typing import Any

from semcache.embedding.base import (
    BUILTIN_EMBEDDERS,
    DEFAULT_EMBEDDER,
    DEFAULT_MODEL_NAME,
    EMBEDDER_ENV,
    Embedder,
)
from semcache.embedding.torch_runtime import SentenceTransformerEmbedder
from semcache.errors import ArgumentTypeError, UsageError


def resolve_embedder(embedder: Embedder | str | Any | None) -> Embedder:
    """Turn the ``embedder=`` argument of ``SemanticCache`` into an ``Embedder``.

    None is the default for a new cache (``DEFAULT_EMBEDDER``: the bundled all-MiniLM-L6-v2), on
    ONNX Runtime (int8) when it is installed, else on torch; ``$SEMCACHE_EMBEDDER`` overrides that
    choice. ``"torch"``, ``"onnx"`` (int8) and
    ``"onnx-fp32"`` pick the bundled model on one runtime, ``"tuned"`` semcache's tuned copy of
    it; any other string is a sentence-transformers model name. Nothing is loaded here.
    """
    if embedder is None:
        choice = os.environ.get(EMBEDDER_ENV, "").strip().lower()
        if choice:
            if choice not in BUILTIN_EMBEDDERS:
                raise UsageError(
                    f"{EMBEDDER_ENV}={choice!r}: expected one of {', '.join(BUILTIN_EMBEDDERS)}"
                )
            return _bundled_on(choice)
        return _default_embedder()
    if isinstance(embedder, str):
        if embedder in BUILTIN_EMBEDDERS:
            return _bundled_on(embedder)
        return SentenceTransformerEmbedder(embedder)
    if isinstance(embedder, Embedder):
        return embedder
    if hasattr(embedder, "encode"):
        return SentenceTransformerEmbedder(embedder)
    raise ArgumentTypeError(
        "embedder must be None, a sentence-transformers model name, a SentenceTransformer "
        f"or an object with name/dimension/embed/fits; got {type(embedder).__name__}"
    )


def for_recorded(name: str | None) -> Embedder | str | None:
    """What ``embedder=`` should be to read a cache whose settings record embedding model ``name``:
    None (the default) when nothing is recorded yet; the built-in embedder of either bundled model
    for its name, so a file keeps the model it was made with whichever is the default (a file made
    by an older default still opens); else the name itself, a sentence-transformers model."""
    from semcache.embedding.tuned import TUNED_MODEL_NAME

    if name == DEFAULT_MODEL_NAME:
        return _bundled_default()
    if name == TUNED_MODEL_NAME:
        return tuned_embedder()
    return name


def _default_embedder() -> Embedder:
    """The default for a new cache (``DEFAULT_EMBEDDER``)."""
    return tuned_embedder() if DEFAULT_EMBEDDER == "tuned" else _bundled_default()


def _bundled_default() -> Embedder:
    """The bundled model on ONNX int8 when it can run here (about 3x faster per prompt on a CPU),
    else torch.

    The ONNX model is exported on the first embedding, which can still fail (a full disk, a torch
    without the TorchScript exporter); this embedder then warns once and uses torch, because a
    default must never break a cache.
    """
    if not onnx_available():
        return SentenceTransformerEmbedder()
    from semcache.embedding.onnx_runtime import OnnxEmbedder

    return OnnxEmbedder(quantize=True, fallback=SentenceTransformerEmbedder)


def tuned_embedder() -> Embedder:
    """semcache's tuned copy of the bundled model: on ONNX Runtime (int8) when it can run here,
    else, or when exporting fails, on torch; the same vectors under the same name either way."""
    from semcache.embedding.tuned import TUNED_MODEL_NAME, tuned_model_path

    def on_torch() -> Embedder:
        return SentenceTransformerEmbedder(name=TUNED_MODEL_NAME, folder=tuned_model_path)

    if not onnx_available():
        return on_torch()
    from semcache.embedding.onnx_runtime import OnnxEmbedder

    return OnnxEmbedder(quantize=True, fallback=on_torch, tuned=True)


def onnx_available() -> bool:
    """True when the ONNX embedder can run here, export included; checked without importing.

    Inference needs only onnxruntime and tokenizers, but the first use exports and quantizes,
    which also needs onnx, torch and transformers.
    """
    import importlib.util

    needed = ("onnxruntime", "onnx", "tokenizers", "torch", "transformers")
    return all(importlib.util.find_spec(m) is not None for m in needed)


def _bundled_on(runtime: str) -> Embedder:
    """The bundled model on the runtime named; asked for by name, so a failure is an error."""
    if runtime == "torch":
        return SentenceTransformerEmbedder()
    if runtime == "tuned":
        return tuned_embedder()
    # Needs ``pip install semcache[onnx]``; without it the first embedding raises EmbedderError.
    from semcache.embedding.onnx_runtime import OnnxEmbedder

    return OnnxEmbedder(quantize=runtime == "onnx")
