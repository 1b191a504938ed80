"""The vector index: one FAISS index per scope, derived from storage and rebuilt from it at any
time (``vector_index``), and the format of a scope's saved file (``file_format``).

Importing this package does not import FAISS: ``VectorIndex`` loads it on first use.
"""

from semcache.index.vector_index import VECTOR_KINDS, VectorIndex, VectorKind

__all__ = ["VECTOR_KINDS", "VectorIndex", "VectorKind"]
