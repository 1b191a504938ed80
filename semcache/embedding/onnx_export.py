"""Making the ONNX files ``OnnxEmbedder`` runs: export with torch, int8 copy, checks, publishing.

This runs once per machine (about 8 s on 2 cores), on the first embedding of an ``OnnxEmbedder``
that finds no valid files; every later process only reads them. Nothing here is imported by the
runtime until then, and torch, transformers and onnx are imported inside the functions that need
them.

The fp32 file is the bundled all-MiniLM-L6-v2 traced by torch's TorchScript exporter (the graph
stops at the token vectors; pooling is done by the runtime). The int8 file quantizes only the
weight MatMuls that measured least sensitive (``_INT8_WEIGHTS``), and is kept only if it agrees
with fp32 to ``MIN_AGREEMENT`` on probe texts; otherwise that verdict is written down and fp32 is
used throughout. ``benchmarks/results/latency.md`` has the measurements behind these choices.

If exporting fails (torch or transformers missing, or a future torch without the TorchScript
exporter), an ``EmbedderError`` says so. The default embedder (``resolve_embedder(None)``) then
logs one warning and embeds with torch instead: the same model and vectors, only slower.

The files live in ``~/.cache/semcache/onnx/<hash of the model files and the recipe>/``. Each is
named after the SHA-256 of its bytes and written to a temporary file, then renamed into place, so
a reader sees a whole file or none, and a damaged one (a disk error, a truncated copy) fails its
own checksum and is made again. An advisory lock makes concurrent first uses export once.
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
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semcache.embedding.base import DEFAULT_MODEL_NAME
from semcache.errors import EmbedderError

logger = logging.getLogger("semcache")

# Part of the cache key: bump it whenever the export or the quantization below changes, so files
# written by an older recipe are never loaded as if they were this one's.
RECIPE = "3:torchscript-opset17:int8-dynamic-per-channel-7bit-mixed"

# The cosine an int8 vector must keep with the fp32 one on every probe text; below it the int8 copy
# is refused (and fp32 used), because the cache compares vectors from both paths in one file.
MIN_AGREEMENT = 0.99

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
PROBE_TEXTS = (
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

# ``probe(model_bytes, texts)``: the vectors the runtime computes with that ONNX model for the
# texts it would run on int8. Passed in by the runtime, so this module needs nothing from it.
Probe = Callable[[bytes, Sequence[str]], np.ndarray]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/semcache/onnx``, else ``~/.cache/semcache/onnx``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "semcache" / "onnx"


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
    folder: Path, model_dir: Path, probe: Probe, *, quantize: bool
) -> dict[str, tuple[Path, bytes]]:
    """The verified ONNX files (``fp32``, and ``int8`` when quantizing) with their bytes.

    Exports what is missing or damaged first; ``probe`` checks a new int8 copy against fp32.
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
            int8 = _find_valid(folder, "int8") or _quantize(folder, fp32, probe)
            if int8 is not None:
                models["int8"] = int8
        return models


def _find_valid(folder: Path, kind: str) -> tuple[Path, bytes] | None:
    """A file ``model-<kind>-<sha256>.onnx`` whose bytes match its name; damaged ones are deleted."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob(f"model-{kind}-*.onnx")):
        data = path.read_bytes()
        if path.name == file_name(kind, data):
            return path, data
        logger.warning("semcache: %s is damaged (checksum mismatch); making it again", path)
        path.unlink(missing_ok=True)
    return None


def file_name(kind: str, data: bytes) -> str:
    """The name a model file is published under: its kind and the SHA-256 of its bytes."""
    return f"model-{kind}-{hashlib.sha256(data).hexdigest()}.onnx"


def _publish(folder: Path, kind: str, data: bytes) -> tuple[Path, bytes]:
    """Write ``data`` under its checksum name: temp file, fsync, rename (atomic on one disk)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".model-{kind}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        path = folder / file_name(kind, data)
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
    the token embeddings, and the runtime's mean pooling does the rest outside the graph. Token
    type ids are always 0 for one sentence, so they are not an input.
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
                _ignore_exporter_notices(torch.jit.TracerWarning)  # type: ignore[attr-defined]
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


def _ignore_exporter_notices(tracer_warning: type[Warning]) -> None:
    """Hide, inside a ``catch_warnings`` block, the notices torch >= 2.9 prints on every export.

    They are about the exporter, not this model, and would greet a user on their first semantic
    lookup: the TorchScript exporter's deprecation (twice), tracing notes from transformers'
    masking code (the graph is traced with a padded batch; the tests check it against torch on
    other shapes), and the opset note on advanced indexing (no negative indexes here). Anything
    else still shows. ``catch_warnings`` changes the process-wide filters, so a warning another
    thread raises meanwhile is filtered by these four rules too, and no others.
    """
    warnings.filterwarnings("ignore", message=r"You are using the legacy TorchScript-based ONNX")
    warnings.filterwarnings(
        "ignore", message=r"The feature will be removed", module=r"torch\.onnx\."
    )
    warnings.filterwarnings("ignore", category=tracer_warning, module=r"transformers\.")
    warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced")


def _quantize(folder: Path, fp32: tuple[Path, bytes], probe: Probe) -> tuple[Path, bytes] | None:
    """The mixed int8 copy, kept only if every probe agrees with fp32 to ``MIN_AGREEMENT``.

    Dynamic quantization with per-output-channel weight scales, of the MatMuls in
    ``_INT8_WEIGHTS`` only. The weights use 7 of the 8 bits (``reduce_range``): x86 CPUs without
    VNNI (AVX2, and AVX-512 before it) multiply uint8 activations by int8 weights in pairs summed
    into int16, which overflows for full-range weights (2 x 255 x 127), while CPUs with VNNI do
    not; 7-bit weights (at most 64: 2 x 255 x 64 = 32,640) never overflow, so every CPU
    computes the same integers and a fleet's machines embed a request alike. Measured on an AVX2
    machine with full-range weights: the worst of 900 request texts kept 0.990 cosine with fp32,
    barely above the bar, and benchmark tables made on another machine did not reproduce; with
    7-bit weights the worst keeps 0.997, at the same speed.
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
                reduce_range=True,  # 7-bit weights: the same integers on every x86 CPU
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=chosen,
            )
        data = Path(target).read_bytes()
    agreement = float((probe(fp32_data, PROBE_TEXTS) * probe(data, PROBE_TEXTS)).sum(axis=1).min())
    if agreement < MIN_AGREEMENT:
        logger.warning(
            "semcache: int8 ONNX model agrees with fp32 only to %.4f cosine; using fp32", agreement
        )
        note = {"min_cosine": agreement, "required": MIN_AGREEMENT, "recipe": RECIPE}
        (folder / _REJECTED).write_text(json.dumps(note))
        return None
    return _publish(folder, "int8", data)


class _DropRecords(logging.Filter):
    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(needle in message for needle in self.needles)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Silence quantize_dynamic's chatter on the root logger while it runs.

    It advises pre-processing (its shape inference fails on this graph) and, at INFO, lists every
    tensor it leaves in float: about twenty lines in an application logging at INFO. It logs
    through ``logging.warning``/``logging.info``, which would also call ``basicConfig()`` in an
    application that never configured logging, and so change where every later warning goes; a
    NullHandler present during the call prevents that.
    """
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    chatter = _DropRecords("pre-processing", "Quantization parameters for tensor")
    if guard is not None:
        root.addHandler(guard)
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)
        if guard is not None:
            root.removeHandler(guard)
