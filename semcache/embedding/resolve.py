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
from semcache.embedding.tuned import TUNED_MODEL_NAME, tuned_model_path
from semcache.errors import ArgumentTypeError, UsageError

# The threshold a cache serves at when ``threshold=`` is not given, per model: two models put the
# same pair of prompts at different similarities, so each model has its own. 0.87 is the lowest at
# which the bundled model, with the built-in verifier, kept semcache's held-out pairs at precision
# 0.99. 0.911 is where the tuned model, with the same verifier, keeps the bundled default's recall
# on STS-B's dev split (which trained nothing): a rule fixed before any test split was read, so the
# tuned default serves as much as the bundled one did, with what the tuning bought going to
# precision (README, "Choosing a threshold"). Re-applied to the vectors of the 7-bit int8 model
# (export recipe 3, the same on every CPU), the rule gives 0.913 and 0.930: a move of 0.002, within
# what the CPU-dependent vectors it was first applied to differed by, so the constants stay, and
# files keep being served as they were. Any other model gets the bundled model's: a guess, to
# be replaced by a threshold measured on that model (``semcache tune``).
BUNDLED_THRESHOLD = 0.87
TUNED_THRESHOLD = 0.911
# The rules check one-word substitutions only below a similarity (``RuleVerifier``,
# 0.90 for the bundled model): above it, a substitution the model still scores that high is more
# often a synonym. The tuned model's gate is 0.90 mapped by the same rule as its threshold.
TUNED_SUBSTITUTION_BELOW = 0.929


def resolve_embedder(
    embedder: Embedder | str | Any | None, recorded: str | None = None
) -> Embedder:
    """Turn the ``embedder=`` argument of ``SemanticCache`` into an ``Embedder``.

    None is ``$SEMCACHE_EMBEDDER`` when set; else the model an existing cache records
    (``recorded``, its ``embedder_name`` setting: ``for_recorded``), so a file keeps the model it
    was made with; else the default for a new cache (``DEFAULT_EMBEDDER``: semcache's tuned copy
    of the bundled all-MiniLM-L6-v2), on ONNX Runtime (int8) when it is installed, else on torch.
    ``"tuned"`` and ``"bundled"`` pick either model that way; ``"torch"``, ``"onnx"`` (int8) and
    ``"onnx-fp32"`` the bundled model on one runtime; any other string is a sentence-transformers
    model name. Nothing is loaded here.
    """
    if embedder is None:
        choice = os.environ.get(EMBEDDER_ENV, "").strip().lower()
        if choice:
            if choice not in BUILTIN_EMBEDDERS:
                raise UsageError(
                    f"{EMBEDDER_ENV}={choice!r}: expected one of {', '.join(BUILTIN_EMBEDDERS)}"
                )
            return _bundled_on(choice)
        embedder = for_recorded(recorded)
        if embedder is None:
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


def default_threshold(model_name: str | None) -> float:
    """The threshold a cache whose embedding model is ``model_name`` serves at by default: the
    tuned model's or else the bundled model's; None (nothing recorded yet) is the default model."""
    return TUNED_THRESHOLD if _on_tuned_scale(model_name) else BUNDLED_THRESHOLD


def substitution_gate(model_name: str) -> float | None:
    """Where the rules' substitution check stops for a cache embedding with ``model_name``: the
    tuned model's gate, else None (the rules' own, set on the bundled model's scale)."""
    return TUNED_SUBSTITUTION_BELOW if _on_tuned_scale(model_name) else None


def _on_tuned_scale(model_name: str | None) -> bool:
    """Whether the similarity constants of ``model_name`` are the tuned model's: the shipped part
    and its leave-one-source-out copies (``tuned_name``); None is the default model."""
    if model_name is None:
        return DEFAULT_EMBEDDER == "tuned"
    return model_name.startswith(TUNED_MODEL_NAME)


def for_recorded(name: str | None) -> Embedder | str | None:
    """What ``embedder=`` should be to read a cache whose settings record embedding model ``name``:
    None (the default) when nothing is recorded yet; the built-in embedder of either bundled model
    for its name, so a file keeps the model it was made with whichever is the default (a file made
    by an older default still opens); else the name itself, a sentence-transformers model."""
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
    if runtime == "bundled":
        return _bundled_default()
    # Needs ``pip install semcache[onnx]``; without it the first embedding raises EmbedderError.
    from semcache.embedding.onnx_runtime import OnnxEmbedder

    return OnnxEmbedder(quantize=runtime == "onnx")
