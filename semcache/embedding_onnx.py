"""An ONNX Runtime embedder for the bundled all-MiniLM-L6-v2: torch's vectors, a fraction of the cost.

On a 2-core CPU, torch spends most of a short prompt's time in framework overhead, not in the six
small transformer layers. ONNX Runtime runs the same graph several times faster, and int8 weights
roughly halve that again. ``OnnxEmbedder`` exports the bundled weights to ONNX once (this needs
torch), caches the files, and from then on embeds with ``onnxruntime`` and the ``tokenizers`` fast
tokenizer alone: a process that finds the files never imports torch.

The vectors are interchangeable with ``SentenceTransformerEmbedder``'s, so both carry the same
``name`` and one cache file serves both. That rests on measurements, kept honest by the tests:

* Pooling is sentence-transformers' for this model (``modules.json``: Transformer, then Pooling
  with ``pooling_mode_mean_tokens``, then Normalize), done in numpy on the exported token vectors.
  fp32 ONNX agrees with torch to a cosine of 0.99999 or better on every text we tried.
* int8 is mixed precision. Dynamic quantization scales a whole activation tensor at once, so its
  error grows as the input gets shorter: below 8 tokens (a two-word prompt) int8 alone dropped to
  0.976 against torch. Texts that short run in fp32 (they cost little there); longer ones run in
  int8, with only the weight matrices that measured least sensitive quantized (``_INT8_WEIGHTS``):
  their worst cosine against torch was 0.9953 on the 4,215 texts of ``data/``. At export, the int8
  copy must also agree with fp32 to ``MIN_AGREEMENT`` on probe texts, or it is refused and fp32 is
  used throughout. ``benchmarks/results/latency.md`` has the numbers.

The cache folder is ``~/.cache/semcache/onnx/<hash of the model files and the export recipe>/``.
Every model file is named after the SHA-256 of its bytes, written to a temporary file and renamed
into place, so a reader sees a whole file or none, and a damaged one (a disk error, a truncated
copy) fails its own checksum on load and is made again. An advisory lock makes concurrent first
uses export once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embedding import DEFAULT_MODEL_NAME, MAX_CHARS_TO_TOKENIZE, bundled_model_path
from semcache.errors import EmbedderError

logger = logging.getLogger("semcache")

# Part of the cache key: bump it whenever the export or the quantization below changes, so files
# written by an older recipe are never loaded as if they were this one's.
RECIPE = "2:torchscript-opset17:int8-dynamic-per-channel-mixed"

# The cosine an int8 vector must keep with the fp32 one on every probe text; below it the int8 copy
# is refused (and fp32 used), because the cache compares vectors from both paths in one file.
MIN_AGREEMENT = 0.99

# Texts with fewer tokens than this ([CLS] and [SEP] included) always run in fp32: int8's error is
# largest on them, and fp32 is cheap at that length.
INT8_MIN_TOKENS = 8

# The weight MatMuls quantized to int8, by sub-layer and layer index. Chosen greedily by measured
# sensitivity (cosine error each one adds alone, per multiply-accumulate saved), stopping where the
# worst text still kept 0.994: q, k and attention-output projections everywhere; values only in
# the first half; the FFN input (after GELU's outlier-prone input) and output only where they hurt
# least. This quantizes 45 of 72 units of work, as much as quantizing every MatMul but the FFN
# outputs did (48), at half the worst-case error.
_INT8_WEIGHTS: dict[str, frozenset[int]] = {
    "attention/self/query": frozenset(range(6)),
    "attention/self/key": frozenset(range(6)),
    "attention/output/dense": frozenset(range(6)),
    "attention/self/value": frozenset({0, 1, 2}),
    "intermediate/dense": frozenset({0, 2, 5}),
    "output/dense": frozenset({3, 4, 5}),
}
_WEIGHT_MATMUL = re.compile(r"layer\.(\d+)/(.+)/MatMul$")
_REJECTED = "int8-rejected.json"

# Texts the int8 copy is checked on at export time: prompts of several lengths, numbers and ids
# (which decide look-alikes), other languages, code.
_PROBE_TEXTS = (
    "Where is my parcel? It should have arrived on Monday.",
    "The office chair from order A-12034 is really uncomfortable. Can I still return it?",
    "refund request - order A-16402 - yoga mat - $1084.99",
    "Extract the customer's name, age and city: Jason is 25 years old and lives in Berlin.",
    "My card was charged twice for the same subscription (invoice INV-2291, 49.90 EUR).",
    "Summarize the following meeting notes in three bullet points. " * 6,
    "def add(a: int, b: int) -> int:\n    return a + b  # why does mypy complain?",
    "¿Dónde está mi pedido? Lo pedí hace dos semanas y todavía no ha llegado.",
    "Wie kann ich mein Passwort zurücksetzen, wenn ich keinen Zugriff auf meine E-Mail habe?",
    "我的订单什么时候发货？请尽快回复。",
    "SELECT name, COUNT(*) FROM orders WHERE status = 'late' GROUP BY name ORDER BY 2 DESC;",
    "Translate to French: the meeting is moved to Thursday at 3 pm, room 4.12.",
    "Classify the sentiment of this review: 'Battery died after two days. Never again!!!'",
    "What is 17% of 2,340? Show the calculation step by step.",
    "thanks, that fixed it!",
)


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
    batch-mates (cosine down to 0.985 against the same text alone, below 0.99 against torch at
    batch 4); one by one it equals a single lookup's vector, and measured faster too. ``workers``
    (default: the CPU count, at most 4) is how many model runs a bulk ``embed`` keeps going at
    once, each on one thread: bulk work gets every core while a single prompt keeps the faster
    one-thread path.

    Nothing is loaded or exported until the first ``embed``, ``fits`` or ``load()``.
    """

    def __init__(
        self,
        quantize: bool = True,
        cache_dir: Path | None = None,
        *,
        threads: int = 1,
        batch_size: int = 32,
        workers: int | None = None,
    ) -> None:
        if threads < 1 or batch_size < 1 or (workers is not None and workers < 1):
            raise ValueError("threads, batch_size and workers must be at least 1")
        self.quantize = quantize
        self.threads = threads
        self.batch_size = batch_size
        self.workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
        self._root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._lock = threading.Lock()
        self._model_dir: Path | None = None
        self._folder: Path | None = None
        self._config: dict[str, Any] | None = None
        self._tokenizer: Any = None
        self._sessions: dict[str, Any] | None = None
        self._files: dict[str, Path] = {}

    # -- the Embedder protocol ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return DEFAULT_MODEL_NAME

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
        # The tokenizer truncates to max_tokens; anything cut off lands in ``overflowing``.
        return not self._load_tokenizer().encode(text).overflowing

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalized float32 vectors, shape ``(len(texts), dimension)``.

        Texts are tokenized together; fp32 texts then run in batches of similar token length
        (sorted, as sentence-transformers does) so little time goes into padding.
        """
        texts = list(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        sessions = self._load_sessions()
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
        """Export (first time only) and load the model now; the ONNX files in use, by kind."""
        self._load_sessions()
        return dict(self._files)

    @property
    def quantized(self) -> bool:
        """Whether the int8 copy is in use (False when it was refused for low agreement)."""
        return "int8" in self._load_sessions()

    @property
    def folder(self) -> Path:
        """The cache folder for this model and recipe (hashing the model files on first use)."""
        if self._folder is None:
            self._folder = self._root / source_hash(self._bundled())
        return self._folder

    def _bundled(self) -> Path:
        if self._model_dir is None:
            self._model_dir = Path(bundled_model_path())
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

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None:
            with self._lock:
                return self._load_tokenizer_unlocked()
        return self._tokenizer

    def _load_tokenizer_unlocked(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._bundled(), self.max_tokens)
        return self._tokenizer

    def _load_sessions(self) -> dict[str, Any]:
        if self._sessions is None:
            with self._lock:
                if self._sessions is None:
                    ort = _import_onnxruntime()
                    tokenizer = self._load_tokenizer_unlocked()
                    try:
                        found = ensure_models(
                            self.folder, self._bundled(), tokenizer, quantize=self.quantize
                        )
                    except OSError as exc:  # an unwritable or full cache_dir, say
                        raise EmbedderError(f"ONNX model cache in {self._root}: {exc}") from exc
                    options = ort.SessionOptions()
                    options.intra_op_num_threads = self.threads
                    options.inter_op_num_threads = 1
                    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                    # Loaded from the verified bytes, not the path: a file swapped after the
                    # checksum was taken cannot be what runs.
                    sessions = {
                        kind: ort.InferenceSession(
                            data, options, providers=["CPUExecutionProvider"]
                        )
                        for kind, (_, data) in found.items()
                    }
                    self._files = {kind: path for kind, (path, _) in found.items()}
                    self._sessions = sessions
        return self._sessions


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


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/semcache/onnx``, else ``~/.cache/semcache/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "semcache" / "onnx"


def is_available() -> bool:
    """True when ``onnxruntime``, ``onnx`` and ``tokenizers`` are installed.

    Inference needs only onnxruntime and tokenizers, but the first use exports and quantizes,
    which also needs onnx (and torch, a dependency of semcache anyway). Checked without importing
    any of them.
    """
    import importlib.util

    needed = ("onnxruntime", "onnx", "tokenizers")
    return all(importlib.util.find_spec(m) is not None for m in needed)


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


def source_hash(model_dir: Path) -> str:
    """A short SHA-256 of what the export reads (weights, config) and of the recipe."""
    digest = hashlib.sha256(RECIPE.encode())
    for name in ("config.json", "model.safetensors"):
        file_digest = hashlib.sha256()
        with open(model_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                file_digest.update(block)
        digest.update(f"\0{name}\0".encode() + file_digest.digest())
    return digest.hexdigest()[:16]


def ensure_models(
    folder: Path, model_dir: Path, tokenizer: Any, *, quantize: bool
) -> dict[str, tuple[Path, bytes]]:
    """The verified ONNX files (``fp32``, and ``int8`` when quantizing) with their bytes.

    Exports what is missing or damaged first. ``tokenizer`` (from ``load_tokenizer``) is used to
    check a new int8 copy on the probe texts.
    """
    if quantize and (folder / _REJECTED).exists():
        quantize = False  # measured once, below the bar: do not quantize again in every process
    kinds = ("fp32", "int8") if quantize else ("fp32",)
    found = {kind: _find_valid(folder, kind) for kind in kinds}
    if all(v is not None for v in found.values()):
        return {k: v for k, v in found.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder / ".export.lock") as alone:
        if alone:  # no other exporter is running, so any temporary file is a killed one's
            for stale in folder.glob("*.tmp"):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
        # Another process may have finished while we waited for the lock.
        fp32 = _find_valid(folder, "fp32") or _export_fp32(folder, model_dir)
        models = {"fp32": fp32}
        if quantize:
            int8 = _find_valid(folder, "int8") or _quantize(folder, fp32, tokenizer)
            if int8 is not None:
                models["int8"] = int8
        return models


def _find_valid(folder: Path, kind: str) -> tuple[Path, bytes] | None:
    """A file ``model-<kind>-<sha256>.onnx`` whose bytes match its name; damaged ones are deleted."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob(f"model-{kind}-*.onnx")):
        data = path.read_bytes()
        if path.name == _file_name(kind, data):
            return path, data
        logger.warning("semcache: %s is damaged (checksum mismatch); making it again", path)
        path.unlink(missing_ok=True)
    return None


def _file_name(kind: str, data: bytes) -> str:
    return f"model-{kind}-{hashlib.sha256(data).hexdigest()}.onnx"


def _publish(folder: Path, kind: str, data: bytes) -> tuple[Path, bytes]:
    """Write ``data`` under its checksum name: temp file, fsync, rename (atomic on one disk)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".model-{kind}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        path = folder / _file_name(kind, data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path, data


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[bool]:
    """Hold an advisory lock so concurrent processes export once (released if a process dies).

    Yields whether the lock is real. Where ``fcntl`` does not exist, exports may run twice; the
    atomic rename still guarantees that no reader sees a partial file.
    """
    try:
        import fcntl
    except ImportError:
        yield False
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _export_fp32(folder: Path, model_dir: Path) -> tuple[Path, bytes]:
    """Trace the transformer (no pooling) with torch and write the fp32 ONNX file.

    Eager attention traces to plain ONNX ops that every ONNX Runtime runs; the graph's output is
    the token embeddings, and ``mean_pool_normalize`` does the rest outside the graph. Token type
    ids are always 0 for one sentence, so they are not an input.
    """
    logger.info("semcache: exporting %s to ONNX (once) in %s", DEFAULT_MODEL_NAME, folder)
    try:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError as exc:
        raise EmbedderError("exporting the ONNX model needs torch and transformers") from exc

    class _Encoder(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.m = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.m(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            )
            return out.last_hidden_state

    try:
        model = AutoModel.from_pretrained(
            str(model_dir), local_files_only=True, attn_implementation="eager"
        )
        model.eval()
        # A padded example, so the traced graph keeps the attention mask's effect.
        ids = torch.tensor([[101, 7592, 2088, 102, 0, 0], [101, 7592, 2088, 2003, 2088, 102]])
        mask = (ids != 0).long()
        with tempfile.TemporaryDirectory(dir=folder, suffix=".tmp") as scratch:
            target = os.path.join(scratch, "model.onnx")
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
                torch.onnx.export(
                    _Encoder(model),
                    (ids, mask),
                    target,
                    dynamo=False,
                    input_names=["input_ids", "attention_mask"],
                    output_names=["token_embeddings"],
                    dynamic_axes={
                        "input_ids": {0: "batch", 1: "sequence"},
                        "attention_mask": {0: "batch", 1: "sequence"},
                        "token_embeddings": {0: "batch", 1: "sequence"},
                    },
                    opset_version=17,
                    do_constant_folding=True,
                )
            data = Path(target).read_bytes()
    except Exception as exc:
        raise EmbedderError(f"exporting {DEFAULT_MODEL_NAME} to ONNX failed: {exc}") from exc
    return _publish(folder, "fp32", data)


def _quantize(folder: Path, fp32: tuple[Path, bytes], tokenizer: Any) -> tuple[Path, bytes] | None:
    """The mixed int8 copy, kept only if every probe agrees with fp32 to ``MIN_AGREEMENT``.

    Dynamic quantization with per-output-channel weight scales, of the MatMuls in
    ``_INT8_WEIGHTS`` only.
    """
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise EmbedderError("quantizing the ONNX model needs the package onnx") from exc
    fp32_path, fp32_data = fp32
    graph = onnx.load_from_string(fp32_data).graph
    chosen = []
    for node in graph.node:
        match = _WEIGHT_MATMUL.search(node.name) if node.op_type == "MatMul" else None
        if match and int(match.group(1)) in _INT8_WEIGHTS.get(match.group(2), ()):
            chosen.append(node.name)
    expected = sum(len(layers) for layers in _INT8_WEIGHTS.values())
    if len(chosen) != expected:  # the exporter named nodes differently: the recipe does not apply
        logger.warning("semcache: int8 recipe matched %d of %d MatMuls", len(chosen), expected)
        return None
    with tempfile.TemporaryDirectory(dir=folder, suffix=".tmp") as scratch:
        target = os.path.join(scratch, "model.onnx")
        with _quiet_root_logger():
            quantize_dynamic(
                str(fp32_path),
                target,
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=chosen,
            )
        data = Path(target).read_bytes()
    agreement = _agreement(fp32_data, data, tokenizer)
    if agreement < MIN_AGREEMENT:
        logger.warning(
            "semcache: int8 ONNX model agrees with fp32 only to %.4f cosine; using fp32", agreement
        )
        note = {"min_cosine": agreement, "required": MIN_AGREEMENT, "recipe": RECIPE}
        (folder / _REJECTED).write_text(json.dumps(note))
        return None
    return _publish(folder, "int8", data)


def _agreement(fp32: bytes, int8: bytes, tokenizer: Any) -> float:
    """The lowest cosine between the two models' vectors over the probe texts int8 would run."""
    ort = _import_onnxruntime()
    vectors = []
    for data in (fp32, int8):
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        rows = []
        for text in _PROBE_TEXTS:
            ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)
            if ids.shape[1] < INT8_MIN_TOKENS:
                continue  # runs in fp32 anyway
            mask = np.ones_like(ids)
            (hidden,) = session.run(
                ["token_embeddings"], {"input_ids": ids, "attention_mask": mask}
            )
            rows.append(mean_pool_normalize(hidden, mask)[0])
        vectors.append(np.stack(rows))
    return float((vectors[0] * vectors[1]).sum(axis=1).min())


class _DropRecord(logging.Filter):
    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle

    def filter(self, record: logging.LogRecord) -> bool:
        return self.needle not in record.getMessage()


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Silence quantize_dynamic's advice to pre-process (its shape inference fails on this graph).

    It logs through ``logging.warning``, which would also call ``basicConfig()`` in an application
    that never configured logging, and so change where every later warning goes; a NullHandler
    present during the call prevents that.
    """
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    hint = _DropRecord("pre-processing")
    if guard is not None:
        root.addHandler(guard)
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)
        if guard is not None:
            root.removeHandler(guard)


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise EmbedderError(
            "the ONNX embedder needs onnxruntime (pip install onnxruntime), "
            "or use the default torch embedder"
        ) from exc
    return onnxruntime
