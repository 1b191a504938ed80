"""The ONNX Runtime embedder: same vectors as torch, a cache of exported files that heals itself,
safe to share between threads and across fork.

The model is exported once for this module (into a temporary folder, about 8 s on 2 cores); the
tests that damage or re-quantize files work on copies of that folder.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import multiprocessing
import queue
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

# onnxruntime and onnx come with the dev extra: imported, not skipped, so a broken install fails.
import onnx  # noqa: F401
import onnxruntime  # noqa: F401
import pytest

from semcache.embedding import (
    DEFAULT_MODEL_NAME,
    SentenceTransformerEmbedder,
    bundled_model_path,
    onnx_export,
)
from semcache.embedding.onnx_runtime import INT8_MIN_TOKENS, OnnxEmbedder, load_tokenizer
from semcache.errors import EmbedderError

REPO = Path(__file__).resolve().parents[1]

VARIED = [
    "",
    "hi",
    "Where is my parcel?",
    "where is my parcel",
    "The office chair from order A-12034 is uncomfortable. Can I return it for a refund?",
    "The office chair from order A-12043 is uncomfortable. Can I return it for a refund?",
    "Cancel my subscription, please.",
    "I want to stop paying for the monthly plan.",
    "refund request - order A-16402 - yoga mat - $1084.99",
    "Jason is 25 years old and lives in Berlin.",
    "Jason is twenty-five years old.",
    "¿Dónde está mi pedido? Lo pedí hace dos semanas.",
    "Wie kann ich mein Passwort zurücksetzen?",
    "我的订单什么时候发货？",
    "Привет, как дела?",
    "def add(a: int, b: int) -> int:\n    return a + b",
    "SELECT * FROM orders WHERE status = 'late';",
    "🙂🙂🙂 great service!!!",
    "    lots   of   spaces\tand\ttabs\n\n\n",
    "A" * 200,
    "Summarize these meeting notes in three bullet points. " * 8,
    "word " * 300,  # longer than the model's window: truncated the same way by both
]


def _texts() -> list[str]:
    texts = list(VARIED)
    tickets = REPO / "data" / "tickets.jsonl"
    if tickets.exists():
        rows = [json.loads(line) for line in tickets.read_text().splitlines() if line.strip()]
        texts += [row["text"] for row in rows[::11]][:30]
    return texts


TEXTS = _texts()


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("semcache"):  # our own INFO line is meant to be seen
            self.messages.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(scope="module")
def exported(onnx_dir: Path) -> tuple[OnnxEmbedder, list[str]]:
    """Exports fp32 and int8 into ``onnx_dir`` (the slow part of this module), noting every
    warning and log record a user would have seen, in an application logging at INFO."""
    model = OnnxEmbedder(quantize=True, cache_dir=onnx_dir)
    root, collect = logging.getLogger(), _Collect()
    level = root.level
    root.addHandler(collect)
    root.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load()
    finally:
        root.removeHandler(collect)
        root.setLevel(level)
    noise = [f"{w.category.__name__}: {w.message}" for w in caught] + collect.messages
    return model, noise


@pytest.fixture(scope="module")
def int8(exported: tuple[OnnxEmbedder, list[str]]) -> OnnxEmbedder:
    return exported[0]


@pytest.fixture(scope="module")
def fp32(int8: OnnxEmbedder, onnx_dir: Path) -> OnnxEmbedder:
    model = OnnxEmbedder(quantize=False, cache_dir=onnx_dir)
    model.load()
    return model


@pytest.fixture(scope="module")
def reference(embedder: SentenceTransformerEmbedder) -> np.ndarray:
    return embedder.embed(TEXTS)


def _copy(folder: Path, target: Path, kinds: tuple[str, ...] = ("fp32", "int8")) -> Path:
    """A copy of an exported cache root holding only the given model files."""
    (target / folder.name).mkdir(parents=True)
    for kind in kinds:
        for path in folder.glob(f"model-{kind}-*.onnx"):
            shutil.copyfile(path, target / folder.name / path.name)
    return target


def test_first_use_is_quiet(exported: tuple[OnnxEmbedder, list[str]]) -> None:
    # torch's exporter warns about its own deprecation, tracing and opsets; quantize_dynamic logs
    # a line per tensor. None of it is actionable for a user on their first semantic lookup.
    model, noise = exported
    assert model.quantized and noise == []


def test_same_name_and_dimension_as_torch(
    int8: OnnxEmbedder, embedder: SentenceTransformerEmbedder
) -> None:
    # Sharing the name is what lets one cache file take vectors from both; it is only allowed
    # because the agreement tests below hold.
    assert int8.name == embedder.name == DEFAULT_MODEL_NAME
    assert int8.dimension == embedder.dimension == 384


@pytest.mark.parametrize(("which", "floor"), [("fp32", 0.9999), ("int8", 0.99)])
def test_agrees_with_torch(
    which: str, floor: float, request: pytest.FixtureRequest, reference: np.ndarray
) -> None:
    model: OnnxEmbedder = request.getfixturevalue(which)
    assert model.quantized is (which == "int8")
    cosines = (model.embed(TEXTS) * reference).sum(axis=1)
    assert len(TEXTS) >= 20
    assert cosines.min() >= floor, TEXTS[int(cosines.argmin())]


def test_int8_weights_fit_in_seven_bits(int8: OnnxEmbedder) -> None:
    # x86 CPUs without VNNI (AVX2, most AVX-512) multiply uint8 activations by int8 weights in
    # pairs summed into int16; with VNNI they do not. Two products of 255 by weights of at most 64
    # make at most 32,640, which int16 holds: every CPU then computes the same integers, so a
    # fleet's machines embed a request alike.
    import onnx as onnx_lib
    from onnx import numpy_helper

    graph = onnx_lib.load(str(int8.load()["int8"])).graph
    int8_type = onnx_lib.TensorProto.INT8
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == int8_type]
    assert len(weights) >= 45  # one weight tensor per quantized MatMul, at least
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_vectors_are_unit_float32(which: str, request: pytest.FixtureRequest) -> None:
    model: OnnxEmbedder = request.getfixturevalue(which)
    vectors = model.embed(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 384)
    assert vectors.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert model.embed([]).shape == (0, 384)


@pytest.mark.parametrize("which", ["fp32", "int8"])
def test_batch_equals_single(which: str, request: pytest.FixtureRequest) -> None:
    model: OnnxEmbedder = request.getfixturevalue(which)
    batch = model.embed(TEXTS)
    single = np.stack([model.embed([text])[0] for text in TEXTS])
    np.testing.assert_allclose(batch, single, atol=1e-5)  # fp32 batches are padded: rounding only
    if model.quantized:  # int8 runs one by one even in bulk: a vector never depends on batch-mates
        long = [i for i, t in enumerate(TEXTS) if _tokens(model, t) >= INT8_MIN_TOKENS]
        assert len(long) > len(TEXTS) // 2
        np.testing.assert_array_equal(batch[long], single[long])


def test_short_texts_run_in_fp32(int8: OnnxEmbedder, fp32: OnnxEmbedder) -> None:
    # int8's error is largest on a few tokens, so those never see it.
    short = [t for t in TEXTS if _tokens(int8, t) < INT8_MIN_TOKENS]
    assert {"", "hi", "Where is my parcel?"} <= set(short)
    np.testing.assert_allclose(int8.embed(short), fp32.embed(short), atol=1e-5)


def _tokens(model: OnnxEmbedder, text: str) -> int:
    return len(load_tokenizer(Path(bundled_model_path()), model.max_tokens).encode(text).ids)


def test_padded_batches_match(onnx_dir: Path, fp32: OnnxEmbedder) -> None:
    small_batches = OnnxEmbedder(quantize=False, cache_dir=onnx_dir, batch_size=3)
    np.testing.assert_allclose(small_batches.embed(TEXTS), fp32.embed(TEXTS), atol=1e-5)


def test_fits_like_torch(int8: OnnxEmbedder, embedder: SentenceTransformerEmbedder) -> None:
    # "word" is one word piece: n words are n + 2 pieces with [CLS] and [SEP].
    edge = {n: " ".join(["word"] * n) for n in (253, 254, 255)}
    assert int8.fits(edge[254]) and not int8.fits(edge[255])
    cases = [*TEXTS, *edge.values(), "x" * 100_001, "hello " * 5_000]
    assert [int8.fits(t) for t in cases] == [embedder.fits(t) for t in cases]
    assert not int8.fits("word " * 300)


def test_inference_never_imports_torch(int8: OnnxEmbedder, onnx_dir: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from semcache.embedding.onnx_runtime import OnnxEmbedder
        model = OnnxEmbedder(cache_dir=Path({str(onnx_dir)!r}))
        model.embed(["where is my parcel?"])
        heavy = [m for m in ("torch", "transformers", "sentence_transformers", "onnx")
                 if m in sys.modules]
        print(heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_damaged_int8_file_is_made_again(
    int8: OnnxEmbedder, onnx_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _copy(int8.folder, tmp_path)
    (damaged,) = (root / int8.folder.name).glob("model-int8-*.onnx")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: still a loadable protobuf, wrong weights
    damaged.write_bytes(bytes(data))

    healed = OnnxEmbedder(quantize=True, cache_dir=root)
    with caplog.at_level(logging.WARNING, logger="semcache"):
        path = healed.load()["int8"]
    assert "damaged" in caplog.text
    assert path == root / int8.folder.name / int8.load()["int8"].name  # deterministic: same bytes
    assert hashlib.sha256(path.read_bytes()).hexdigest() in path.name
    np.testing.assert_array_equal(healed.embed(TEXTS[:5]), int8.embed(TEXTS[:5]))
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.slow
def test_truncated_fp32_file_is_exported_again(
    fp32: OnnxEmbedder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = _copy(fp32.folder, tmp_path, kinds=("fp32",))
    (half,) = (root / fp32.folder.name).glob("model-fp32-*.onnx")
    half.write_bytes(half.read_bytes()[: half.stat().st_size // 2])  # an interrupted copy

    healed = OnnxEmbedder(quantize=False, cache_dir=root)
    with caplog.at_level(logging.WARNING, logger="semcache"):
        path = healed.load()["fp32"]
    assert "damaged" in caplog.text
    # The export is deterministic: the same name again, now with all of its bytes.
    assert path == half and path.stat().st_size == fp32.load()["fp32"].stat().st_size
    np.testing.assert_allclose(healed.embed(TEXTS[:5]), fp32.embed(TEXTS[:5]), atol=1e-6)


def test_concurrent_loads_quantize_once(fp32: OnnxEmbedder, tmp_path: Path) -> None:
    root = _copy(fp32.folder, tmp_path, kinds=("fp32",))
    models = [OnnxEmbedder(quantize=True, cache_dir=root) for _ in range(3)]
    paths: list[Path] = []
    threads = [threading.Thread(target=lambda m=m: paths.append(m.load()["int8"])) for m in models]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    folder = root / fp32.folder.name
    assert len(set(paths)) == 1 and len(list(folder.glob("model-int8-*.onnx"))) == 1
    assert not list(folder.glob("*.tmp"))


@pytest.fixture
def impossible_bar(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(onnx_export, "MIN_AGREEMENT", 1.01)
    yield


@pytest.mark.usefixtures("impossible_bar")
def test_int8_refused_below_agreement_bar(fp32: OnnxEmbedder, tmp_path: Path) -> None:
    root = _copy(fp32.folder, tmp_path, kinds=("fp32",))
    model = OnnxEmbedder(quantize=True, cache_dir=root)
    assert list(model.load()) == ["fp32"] and not model.quantized
    assert (root / fp32.folder.name / "int8-rejected.json").exists()
    # Later processes read the verdict instead of quantizing again.
    again = OnnxEmbedder(quantize=True, cache_dir=root)
    assert again.load() == model.load()


def test_unusable_cache_dir_is_one_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    with pytest.raises(EmbedderError, match="ONNX model cache"):
        OnnxEmbedder(cache_dir=not_a_dir).embed(["hello"])


def test_a_torch_written_cache_serves_onnx_lookups(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, int8: OnnxEmbedder
) -> None:
    """Same name, same vectors to cosine >= 0.995: one file serves both embedders."""
    from pydantic import BaseModel

    from semcache import SemanticCache

    class Answer(BaseModel):
        text: str

    db = tmp_path / "mixed.db"
    with SemanticCache(db, embedder=embedder) as cache:
        cache.store(
            [{"role": "user", "content": "How do I reset my password?"}], Answer, Answer(text="a")
        )
    with SemanticCache(db, embedder=int8) as cache:
        hit = cache.lookup([{"role": "user", "content": "How can I reset my password?"}], Answer)
        assert hit is not None and hit.tier == "semantic" and hit.value.text == "a"


def _embed_and_let_go(box: list[OnnxEmbedder], texts: list[str], out: Any) -> None:
    """In a forked child: embed, then drop the embedder, as a worker's exit would."""
    vectors = box[0].embed(texts).tolist()
    box.clear()  # the child's only reference: its sessions are destroyed now
    gc.collect()
    out.put(vectors)


@pytest.mark.parametrize("threads", [1, 4])
def test_a_forked_child_embeds_like_its_parent(
    onnx_dir: Path, int8: OnnxEmbedder, threads: int
) -> None:
    """A pre-fork server loads the model, then forks workers that embed and exit.

    With 4 threads, destroying the inherited session in the child crashed it (SIGSEGV): the child
    must build its own sessions and leave the inherited ones alone.
    """
    box = [OnnxEmbedder(cache_dir=onnx_dir, threads=threads)]
    parent = box[0].embed(TEXTS)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    child = context.Process(target=_embed_and_let_go, args=(box, TEXTS, out))
    child.start()
    try:
        for _ in range(240):  # up to 2 minutes, failing as soon as the child dies
            try:
                vectors = out.get(timeout=0.5)
                break
            except queue.Empty:
                if child.exitcode not in (None, 0):
                    pytest.fail(f"the forked child died (exit code {child.exitcode})")
        else:
            pytest.fail("the forked child hung")
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
            child.join()
    assert child.exitcode == 0
    np.testing.assert_allclose(np.array(vectors, dtype=np.float32), parent, atol=1e-5)
    np.testing.assert_array_equal(box[0].embed(TEXTS), parent)  # the parent's sessions still work


def test_threads_share_one_embedder(onnx_dir: Path, int8: OnnxEmbedder) -> None:
    serial = int8.embed(TEXTS)
    singles = np.stack([int8.embed([text])[0] for text in TEXTS])
    shared = OnnxEmbedder(cache_dir=onnx_dir)  # not loaded yet: the threads race to load it too
    start = threading.Barrier(4)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            start.wait()
            if i % 2:
                results[i] = np.stack([shared.embed([text])[0] for text in TEXTS])
            else:
                results[i] = shared.embed(TEXTS)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(results) == 4
    for i, vectors in results.items():
        np.testing.assert_array_equal(vectors, singles if i % 2 else serial)
