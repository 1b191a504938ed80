"""The sentence-transformers (torch) runtime: any sentence-transformers model, loaded lazily.

torch and transformers are imported on the first embedding, not on import, so code that only reads
the exact tier or the store never pays for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semcache.embedding.base import DEFAULT_MODEL_NAME, MAX_CHARS_TO_TOKENIZE, bundled_model_path
from semcache.errors import EmbedderError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

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


class SentenceTransformerEmbedder:
    """An ``Embedder`` over a sentence-transformers model, loaded lazily.

    ``model`` is None for the bundled all-MiniLM-L6-v2 (loaded from the installed package with
    ``local_files_only``, so it never touches the network), a model name or folder, or an already
    constructed ``SentenceTransformer``. ``folder``, with ``model`` None, gives the local folder to
    load instead of the bundled one, asked for on the first embedding (the tuned model's folder is
    derived then: ``semcache.embedding.tuned``).
    """

    def __init__(
        self,
        model: str | SentenceTransformer | None = None,
        *,
        name: str | None = None,
        device: str = "cpu",
        folder: Callable[[], Path | str] | None = None,
    ) -> None:
        self._device = device
        self._lock = threading.Lock()
        self._model: Any = None
        self._source: str | None = None
        self._folder = folder or bundled_model_path
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
                    source = self._source or str(self._folder())
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
