"""An ONNX Runtime embedder for the bundled all-MiniLM-L6-v2: torch's vectors, a fraction of the cost.

On a 2-core CPU, torch spends most of a short prompt's time in framework overhead; ONNX Runtime
runs the same graph several times faster, and int8 weights roughly halve that again. The model is
exported once per machine by ``semcache.embedding.onnx_export`` (which needs torch); after that a process
embeds with ``onnxruntime`` and ``tokenizers`` alone and never imports torch.

The vectors are ``SentenceTransformerEmbedder``'s, under the same ``name``, so one cache file
serves both; the tests hold this. Pooling is sentence-transformers' for this model (masked mean,
then L2), done in numpy: fp32 agrees with torch to cosine 0.99999. int8's error grows as inputs
get shorter (0.976 below 8 tokens), so short texts run in fp32 and the rest on the mixed int8
copy: worst cosine 0.9953 against torch over the 4,215 texts of ``data/``.

**Fallback.** As the default embedder it is built with ``fallback=`` the torch embedder: if the
export or the load fails (an unwritable cache folder, a torch without the TorchScript exporter, a
file this onnxruntime cannot read), it logs one warning and that instance embeds with torch from
then on. Asked for by name (``"onnx"``), it has no fallback and raises ``EmbedderError``.

**Fork.** Sessions own thread pools, and a forked child gets a copy of a session but not its
threads: using the copy works, destroying it crashed the child (SIGSEGV with 4 threads,
onnxruntime 1.32; microsoft/onnxruntime#31961). So a child builds its own sessions and never frees
the inherited ones (shared with the parent, copy-on-write). Not fixable here: onnxruntime starts
a thread on import, and a child forked after that hangs in its C++ destructors if it ends with
``exit()`` (``sys.exit``) rather than ``os._exit`` as multiprocessing's children do; so a pre-fork
server should not embed in the parent.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embedding.base import (
    DEFAULT_MODEL_NAME,
    MAX_CHARS_TO_TOKENIZE,
    Embedder,
    bundled_model_path,
)
from semcache.embedding.onnx_export import default_cache_dir, ensure_models, source_hash
from semcache.embedding.tuned import SHIPPED_PART, tuned_model_path, tuned_name
from semcache.errors import EmbedderError, UsageError

logger = logging.getLogger("semcache")

# Texts with fewer tokens than this ([CLS] and [SEP] included) always run in fp32: int8's error is
# largest on them, and fp32 is cheap at that length.
INT8_MIN_TOKENS = 8

# Held only while an embedder notices it is in a forked child and swaps in fresh per-process
# state. Re-created in every child, in case a parent thread held it at the fork.
_FORK_GUARD = threading.Lock()


def _new_fork_guard() -> None:
    global _FORK_GUARD
    _FORK_GUARD = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_fork_guard)


class _ProcessState:
    """What cannot cross a fork: the sessions (their thread pools) and the lock guarding loading
    (one held by a parent thread at the fork would stay held forever in the child)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.RLock()  # reentrant: falling back happens while loading
        self.sessions: dict[str, Any] | None = None
        self.files: dict[str, Path] = {}


class OnnxEmbedder:
    """An ``Embedder`` running the bundled all-MiniLM-L6-v2 on ONNX Runtime.

    ``quantize`` runs texts of ``INT8_MIN_TOKENS`` tokens or more on the mixed int8 copy (about
    twice as fast as fp32); it is refused automatically when it would not agree with fp32 to 0.99
    cosine. ``cache_dir`` is where exported files are kept (default ``$XDG_CACHE_HOME/semcache/onnx``
    or ``~/.cache/semcache/onnx``), in a subfolder per model and recipe. ``threads`` is ONNX
    Runtime's intra-op thread count: 1 measured fastest for one short prompt on 2 cores (the work
    per operator is too small to split), and leaves the other core to the application.
    ``batch_size`` is how many fp32 texts ``embed`` runs at once. int8 texts always run one by one:
    dynamic quantization scales a whole batch together, so a batched vector would depend on its
    batch-mates (cosine down to 0.985 against the same text alone); one by one it equals a single
    lookup's vector, and measured faster too. ``workers`` (default: the CPU count, at most 4) is
    how many model runs a bulk ``embed`` keeps going at once, each on one thread. ``fallback``
    makes the embedder used instead if the ONNX model cannot be exported or loaded. ``tuned`` runs
    semcache's tuned copy of the model instead (``semcache.embedding.tuned``), under its own name;
    ``part`` another shipped part in its place (a leave-one-source-out copy, in benchmarks).

    Nothing is loaded or exported until the first ``embed``, ``fits`` or ``load()``. Safe to share
    between threads, and across ``fork``.
    """

    def __init__(
        self,
        quantize: bool = True,
        cache_dir: Path | None = None,
        *,
        threads: int = 1,
        batch_size: int = 32,
        workers: int | None = None,
        fallback: Callable[[], Embedder] | None = None,
        tuned: bool = False,
        part: Path | None = None,
    ) -> None:
        if threads < 1 or batch_size < 1 or (workers is not None and workers < 1):
            raise UsageError("threads, batch_size and workers must be at least 1")
        self.quantize = quantize
        # The tuned model is the bundled one with a shipped part put in; None: the bundled model.
        self._part = part if part is not None else (SHIPPED_PART if tuned else None)
        self._name: str | None = None
        self.threads = threads
        self.batch_size = batch_size
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
        self._root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._fallback = fallback
        self._replacement: Embedder | None = None  # the fallback, once loading has failed
        self._state = _ProcessState()
        self._model_dir: Path | None = None
        self._folder: Path | None = None
        self._config: dict[str, Any] | None = None
        # Immutable once configured, and tokenizers handles its own thread pool at fork: shared.
        self._tokenizer: Any = None

    # -- the Embedder protocol ------------------------------------------------------------------

    @property
    def name(self) -> str:
        if self._name is None:
            self._name = DEFAULT_MODEL_NAME if self._part is None else tuned_name(self._part)
        return self._name

    @property
    def dimension(self) -> int:
        return int(self._model_config()["dimension"])

    @property
    def max_tokens(self) -> int:
        """How many word pieces the model reads, special tokens included (256)."""
        return int(self._model_config()["max_tokens"])

    def fits(self, text: str) -> bool:
        """True when the model reads every token of ``text`` (nothing is truncated)."""
        if len(text) > MAX_CHARS_TO_TOKENIZE:
            return False
        if len(text) + 2 <= self.max_tokens:  # a word piece covers at least one character
            return True
        if self._replacement is None:
            try:
                # The tokenizer truncates to max_tokens; anything cut off lands in ``overflowing``.
                return not self._load_tokenizer().encode(text).overflowing
            except Exception as exc:
                return self._fall_back(exc).fits(text)
        return self._replacement.fits(text)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized float32 vectors, shape ``(len(texts), dimension)``.

        Texts are tokenized together; fp32 texts then run in batches of similar token length
        (sorted, as sentence-transformers does) so little time goes into padding.
        """
        texts = list(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        sessions = self._backend()
        if not isinstance(sessions, dict):
            return sessions.embed(texts)
        encodings = self._load_tokenizer().encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
        order = np.argsort(lengths, kind="stable")
        if "int8" in sessions:
            short = lengths[order] < INT8_MIN_TOKENS
            fp32_rows, int8_rows = order[short], order[~short]
        else:
            fp32_rows, int8_rows = order, order[:0]
        # Jobs of about one fp32 batch's work each, in length order; int8 texts run one by one.
        jobs = [
            (sessions["fp32"], fp32_rows[i : i + self.batch_size], self.batch_size)
            for i in range(0, len(fp32_rows), self.batch_size)
        ] + [(sessions.get("int8"), int8_rows[i : i + 16], 1) for i in range(0, len(int8_rows), 16)]

        def run(job: tuple[Any, np.ndarray, int]) -> None:
            session, rows, step = job
            for start in range(0, len(rows), step):
                _run(session, encodings, lengths, rows[start : start + step], out)

        if self.workers > 1 and len(jobs) > 1:
            # ONNX Runtime releases the GIL and allows concurrent runs of one session.
            with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
                list(pool.map(run, jobs))
        else:
            for job in jobs:
                run(job)
        if not np.isfinite(out).all():
            raise EmbedderError(f"embedding model {self.name!r} returned unusable vectors")
        return out

    # -- loading ---------------------------------------------------------------------------------

    def load(self) -> dict[str, Path]:
        """Export (first time only) and load the model now; the ONNX files in use, by kind.

        Empty when this embedder has fallen back to its ``fallback``.
        """
        self._backend()
        return dict(self._process_state().files)

    @property
    def quantized(self) -> bool:
        """Whether the int8 copy is in use (False when it was refused for low agreement)."""
        sessions = self._backend()
        return isinstance(sessions, dict) and "int8" in sessions

    @property
    def backend(self) -> str:
        """What embeds: ``"onnx-int8"``, ``"onnx-fp32"`` or ``"fallback"`` (loads the model)."""
        sessions = self._backend()
        if not isinstance(sessions, dict):
            return "fallback"
        return "onnx-int8" if "int8" in sessions else "onnx-fp32"

    @property
    def folder(self) -> Path:
        """The cache folder for this model and recipe (hashing the model files on first use)."""
        if self._folder is None:
            self._folder = self._root / source_hash(self._bundled())
        return self._folder

    def _bundled(self) -> Path:
        if self._model_dir is None:
            if self._part is None:
                self._model_dir = Path(bundled_model_path())
            else:
                self._model_dir = tuned_model_path(part=self._part)
        return self._model_dir

    def _model_config(self) -> dict[str, Any]:
        """Dimension and window from the model folder's own config files (no model loaded)."""
        if self._config is None:
            folder = self._bundled()
            modules = json.loads((folder / "modules.json").read_text())
            kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
            pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())
            modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v]
            # The pooling here is only right for this layout; refuse anything else loudly.
            if kinds != ["Transformer", "Pooling", "Normalize"] or modes != [
                "pooling_mode_mean_tokens"
            ]:
                raise EmbedderError(f"unexpected sentence-transformers layout in {folder}")
            st_config = json.loads((folder / "sentence_bert_config.json").read_text())
            self._config = {
                "dimension": int(pooling["word_embedding_dimension"]),
                "max_tokens": int(st_config["max_seq_length"]),
            }
        return self._config

    def _process_state(self) -> _ProcessState:
        """This process's sessions and lock; fresh ones in a forked child (module docstring)."""
        state = self._state
        if state.pid == os.getpid():
            return state
        with _FORK_GUARD:
            if self._state.pid != os.getpid():
                _never_free(self._state.sessions)
                self._state = _ProcessState()
            return self._state

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            with self._process_state().lock:
                if self._tokenizer is None:
                    self._tokenizer = load_tokenizer(self._bundled(), self.max_tokens)
        return self._tokenizer

    def _backend(self) -> dict[str, Any] | Embedder:
        """The ONNX sessions by kind (loaded on first use), or the fallback once loading failed."""
        state = self._process_state()
        if state.sessions is None and self._replacement is None:
            with state.lock:
                if state.sessions is None and self._replacement is None:
                    try:
                        state.sessions = self._open_sessions(state)
                    except Exception as exc:
                        return self._fall_back(exc)
        if self._replacement is not None:
            return self._replacement
        assert state.sessions is not None
        return state.sessions

    def _open_sessions(self, state: _ProcessState) -> dict[str, Any]:
        """Export what is missing and open one session per model file (call with the lock held)."""
        ort = _import_onnxruntime()
        probe = functools.partial(_probe_vectors, tokenizer=self._load_tokenizer())
        try:
            found = ensure_models(self.folder, self._bundled(), probe, quantize=self.quantize)
        except OSError as exc:  # an unwritable or full cache_dir, say
            raise EmbedderError(f"ONNX model cache in {self._root}: {exc}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            # Loaded from the verified bytes, not the path: a file swapped after the checksum was
            # taken cannot be what runs.
            sessions = {
                kind: ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
                for kind, (_, data) in found.items()
            }
        except Exception as exc:  # a file this onnxruntime cannot run
            raise EmbedderError(f"onnxruntime cannot load {self.folder}: {exc}") from exc
        state.files = {kind: path for kind, (path, _) in found.items()}
        return sessions

    def _fall_back(self, exc: Exception) -> Embedder:
        """The fallback after ``exc``, made once with one warning; without a fallback, raise."""
        if self._fallback is None:
            raise exc
        with self._process_state().lock:
            replacement = self._replacement
            if replacement is None:
                replacement = self._replacement = self._fallback()
                logger.warning(
                    "semcache: the ONNX embedder cannot run (%s); embedding with %s instead: "
                    "the same model and vectors, slower. SEMCACHE_EMBEDDER=torch skips ONNX.",
                    exc,
                    type(replacement).__name__,
                )
        return replacement


def _never_free(sessions: dict[str, Any] | None) -> None:
    """Keep a parent's sessions alive in a forked child until it exits (module docstring).

    One reference more than anything will ever release, so neither the garbage collector nor
    interpreter shutdown runs their destructors here; they are pages shared with the parent.
    """
    for session in (sessions or {}).values():
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(session))


def _run(
    session: Any, encodings: Sequence[Any], lengths: np.ndarray, batch: np.ndarray, out: np.ndarray
) -> None:
    """Embed one batch (indexes into ``encodings``) into its rows of ``out``, padded to its longest."""
    width = int(lengths[batch].max())
    ids = np.zeros((len(batch), width), dtype=np.int64)  # 0 is [PAD]
    mask = np.zeros((len(batch), width), dtype=np.int64)
    for r, i in enumerate(batch):
        n = int(lengths[i])
        ids[r, :n] = encodings[i].ids
        mask[r, :n] = 1
    (hidden,) = session.run(["token_embeddings"], {"input_ids": ids, "attention_mask": mask})
    out[batch] = mean_pool_normalize(hidden, mask)


def _probe_vectors(data: bytes, texts: Sequence[str], *, tokenizer: Any) -> np.ndarray:
    """What the export checks an int8 copy with: ``data``'s vectors for the texts int8 would run."""
    session = _import_onnxruntime().InferenceSession(data, providers=["CPUExecutionProvider"])
    rows = []
    for text in texts:
        ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
        if ids.shape[1] < INT8_MIN_TOKENS:
            continue  # runs in fp32 anyway
        mask = np.ones_like(ids)
        (hidden,) = session.run(["token_embeddings"], {"input_ids": ids, "attention_mask": mask})
        rows.append(mean_pool_normalize(hidden, mask)[0])
    return np.stack(rows)


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sentence-transformers' mean pooling then ``F.normalize``, in numpy.

    Pooling: the mean of the token vectors under the attention mask, the count clamped at 1e-9.
    Normalize: divide by the L2 norm clamped at 1e-12.
    """
    weights = mask.astype(np.float32)[:, None, :]  # (batch, 1, seq)
    summed = np.matmul(weights, hidden.astype(np.float32, copy=False))[:, 0, :]
    pooled = summed / np.maximum(weights.sum(axis=2), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    unit: np.ndarray = (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
    return unit


def load_tokenizer(model_dir: Path, max_tokens: int) -> Any:
    """The model's fast tokenizer, truncating at ``max_tokens`` and never padding.

    tokenizer.json ships with truncation at 128 and fixed padding to 128; sentence-transformers
    reads 256 word pieces, so both are overridden (padding is done per batch in ``embed``).
    """
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise EmbedderError("the ONNX embedder needs the package tokenizers") from exc
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.no_padding()
    return tokenizer


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EmbedderError(
            "the ONNX embedder needs onnxruntime (pip install onnxruntime), "
            "or use the torch embedder (embedder='torch')"
        ) from exc
    return onnxruntime
