"""The vector index: one FAISS index per scope, derived from storage and rebuilt from it at any
time (``vector_index``), the FAISS index of each stage and ``vectors=`` choice (``stages``), the
checks a scope's saved file must pass to be used (``saved_files``), and that file's format
(``file_format``).

Importing this package does not import FAISS: ``VectorIndex`` loads it on first use.
"""

from semcache.index.stages import VECTOR_KINDS, VectorKind
from semcache.index.vector_index import VectorIndex

__all__ = ["VECTOR_KINDS", "VectorIndex", "VectorKind"]
