"""Text embedders: the ``Embedder`` protocol, the torch and ONNX runtimes, the ONNX export.

``base`` (protocol, bundled model) <- ``torch_runtime``, ``onnx_export`` <- ``onnx_runtime`` <-
``resolve`` (the ``embedder=`` argument). Importing this package loads neither torch nor
onnxruntime: each runtime imports its library on the first embedding.
"""

from semcache.embedding.base import (
    BUILTIN_EMBEDDERS,
    DEFAULT_MODEL_NAME,
    EMBEDDER_ENV,
    MAX_CHARS_TO_TOKENIZE,
    Embedder,
    bundled_model_path,
)
from semcache.embedding.resolve import onnx_available, resolve_embedder
from semcache.embedding.torch_runtime import SentenceTransformerEmbedder

__all__ = [
    "BUILTIN_EMBEDDERS",
    "DEFAULT_MODEL_NAME",
    "EMBEDDER_ENV",
    "MAX_CHARS_TO_TOKENIZE",
    "Embedder",
    "SentenceTransformerEmbedder",
    "bundled_model_path",
    "onnx_available",
    "resolve_embedder",
]
