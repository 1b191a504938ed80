"""The tuned embedder's model folder: the bundled all-MiniLM-L6-v2 with semcache's small shipped part.

``tuned_minilm.safetensors`` (next to this module, 128 KB) holds new values for the bias and
LayerNorm parameters of all-MiniLM-L6-v2 (31,104 of its 22.7 million numbers), fitted by
``training/tune_embedder.py`` on data semcache may ship weights from (its own ``data/written`` and
``data/pairs`` train pairs, and STS-B's train split). Everything else is the bundled model, unchanged: training so few numbers keeps
what the model learned from its billion pairs (``training/README.md`` has the measurements).

On first use the folder is derived once per machine: the bundled weights with the shipped values put
in, written beside the bundled configuration and tokenizer files into
``~/.cache/semcache/models/<hash of the inputs>/``. Every runtime then loads it as any
sentence-transformers folder (torch directly; ONNX exports it as it does the bundled model). The
folder is written to a temporary name and renamed into place, so a reader sees all of it or none;
its weights file is checked against the hash recorded beside it, so a damaged copy is made again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from semcache.embedding.base import bundled_model_path
from semcache.errors import EmbedderError

logger = logging.getLogger("semcache")

# The name cache files record. Vectors of two different shipped parts must never share a file, so
# the name changes with the part: ``SHIPPED_SHA256`` pins the part this name stands for, and a test
# fails when the file changes without both being updated.
TUNED_MODEL_NAME = "semcache/all-MiniLM-L6-v2-tuned-1"
SHIPPED_PART = Path(__file__).with_name("tuned_minilm.safetensors")
SHIPPED_SHA256 = "752f0867117321def90d3b3d32a60c947e0ded2d2e817620bd301721eecd020d"
_WEIGHTS = "model.safetensors"
_CHECK = "semcache-derived.json"


def default_models_dir() -> Path:
    """``$XDG_CACHE_HOME/semcache/models``, else ``~/.cache/semcache/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "semcache" / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tuned_name(part: Path) -> str:
    """The name of the tuned model with ``part`` put in: ``TUNED_MODEL_NAME`` for the shipped part,
    else that name with the part's hash, so no other part's vectors pass for the shipped one's."""
    digest = _sha256(part)
    return TUNED_MODEL_NAME if digest == SHIPPED_SHA256 else f"{TUNED_MODEL_NAME}@{digest[:12]}"


def tuned_model_path(root: Path | None = None, part: Path = SHIPPED_PART) -> Path:
    """The derived model folder, made on first use (module docstring). Without ``root``, where the
    user's cache folder cannot be written (read-only, full, not a folder), the system's temporary
    folder stands in, so the tuned model still loads; it is then derived again after a reboot."""
    if root is not None:
        return _derived(root, part)
    try:
        return _derived(default_models_dir(), part)
    except OSError as exc:
        fallback = Path(tempfile.gettempdir()) / f"semcache-models-{os.getuid()}"
        logger.warning("semcache: cannot write %s (%s); deriving the tuned model in %s",
                       default_models_dir(), exc, fallback)  # fmt: skip
        return _derived(fallback, part)


def _derived(root: Path, part: Path) -> Path:
    base = Path(bundled_model_path())
    key = hashlib.sha256(
        f"{_sha256(base / _WEIGHTS)}\0{_sha256(part)}\0{TUNED_MODEL_NAME}".encode()
    ).hexdigest()[:16]
    folder = root / key
    if _valid(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{key}.", suffix=".tmp"))
    try:
        _derive(base, part, scratch)
        try:
            os.replace(scratch, folder)
        except OSError:
            if not _valid(folder):  # another process won the race with a whole folder, or not
                shutil.rmtree(folder, ignore_errors=True)
                os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not _valid(folder):
        raise EmbedderError(f"the tuned model folder {folder} could not be written")
    return folder


def _valid(folder: Path) -> bool:
    try:
        check = json.loads((folder / _CHECK).read_text(encoding="utf-8"))
        return bool(_sha256(folder / _WEIGHTS) == check["weights_sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _derive(base: Path, part: Path, into: Path) -> None:
    """Copy the bundled folder into ``into`` with the shipped parameter values put in."""
    try:
        from safetensors.numpy import load_file, save_file
    except ImportError as exc:  # pragma: no cover - installed with sentence-transformers
        raise EmbedderError("the tuned embedder needs the safetensors package") from exc
    try:
        weights = load_file(str(base / _WEIGHTS))
        shipped = load_file(str(part))
    except Exception as exc:
        raise EmbedderError(f"cannot read the tuned embedder's weights: {exc}") from exc
    for name, value in shipped.items():
        old = weights.get(name)
        if old is None or old.shape != value.shape or old.dtype != value.dtype:
            raise EmbedderError(
                f"{part.name} does not fit the bundled model: parameter {name!r} "
                f"{'is missing' if old is None else f'has shape {old.shape}, not {value.shape}'}"
            )
        weights[name] = value
    for item in base.iterdir():
        if item.name == _WEIGHTS or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, into / item.name)
        else:
            shutil.copy2(item, into / item.name)
    save_file(weights, str(into / _WEIGHTS))
    check = {"model": TUNED_MODEL_NAME, "weights_sha256": _sha256(into / _WEIGHTS)}
    (into / _CHECK).write_text(json.dumps(check), encoding="utf-8")
