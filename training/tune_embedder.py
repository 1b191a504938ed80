"""Fit the tuned embedder's shipped part: new bias and LayerNorm values for all-MiniLM-L6-v2.

    python training/tune_embedder.py                      # writes semcache/embedding/tuned_minilm.safetensors
    python training/tune_embedder.py --without written    # a leave-one-source-out copy, elsewhere

Only the bias and LayerNorm parameters train (31,104 numbers, "BitFit"); every weight matrix stays
the bundled model's, which is what keeps the knowledge of the billion pairs all-MiniLM-L6-v2 was
trained on (a model fine-tuned whole on a few thousand pairs measured worse on real duplicate
questions than plain MiniLM). Loss: in-batch negatives ("multiple negatives ranking", scale 20),
with a hard negative from the same group where the source has one; a batch never holds two pairs
of one group, so no positive is scored as another's negative.

Training data, only what semcache may ship weights from:

- ``written``: every positive pair of ``data/written`` (ours, MIT), each with a negative of its
  group;
- ``pairs``: the ``train`` split of ``data/pairs`` (ours; whole template families, so its ``test``
  families stay unseen), each positive with a negative of its group;
- ``stsb``: STS-B's train split, pairs scored >= 4 (CC BY-SA 4.0), read in place from
  ../shared/data.

SICK and MRPC (research and non-commercial licences) never train anything; Banking77's train split
may, but measured worse on SICK and no better on Banking77's own unseen intents than leaving it out
(``training/README.md``), so it is not used. One epoch, seed 0, torch on the CPU; the run writes
the hashes of its inputs and output, its settings and its losses beside the weights
(``training/results/<name>.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "semcache" / "embedding" / "tuned_minilm.safetensors"
RESULTS = ROOT / "training" / "results"
SOURCES = ("written", "pairs", "stsb")
SEED = 0
BATCH = 64
LEARNING_RATE = 2e-3
SCALE = 20.0
MAX_TOKENS = 64  # training pairs are short; the model still reads 256 at run time
WARMUP = 0.1

Item = tuple[str, str, str | None, str]  # anchor, positive, hard negative, group


def _jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def written_items(rng: random.Random) -> tuple[list[Item], list[Path]]:
    files = sorted((ROOT / "data" / "written").glob("*.jsonl"))
    items: list[Item] = []
    for path in files:
        # In data/written every negative is a variant ``b`` of the group's request ``a``.
        items += _with_negatives(_groups(_jsonl(path)).items(), rng, "written", ("b",))
    return items, files


def pairs_items(rng: random.Random) -> tuple[list[Item], list[Path]]:
    path = ROOT / "data" / "pairs" / "pairs.jsonl"
    groups = _groups(r for r in _jsonl(path) if r["split"] == "train")
    return _with_negatives(sorted(groups.items()), rng, "pairs", ("a", "b")), [path]


def _groups(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["group"]), []).append(row)
    return groups


def _with_negatives(
    groups: Iterable[tuple[str, list[dict[str, Any]]]],
    rng: random.Random,
    source: str,
    sides: tuple[str, ...],
) -> list[Item]:
    """Each positive pair of each group with a negative drawn from the ``sides`` of the group's
    negative pairs that no positive pair of the group uses."""
    items: list[Item] = []
    for group, rows in groups:
        positives = {t for r in rows if r["label"] == 1 for t in (r["a"], r["b"])}
        negatives = sorted({r[side] for r in rows if r["label"] == 0 for side in sides} - positives)
        for r in rows:
            if r["label"] == 1:
                negative = rng.choice(negatives) if negatives else None
                items.append((r["a"], r["b"], negative, f"{source}/{group}"))
    return items


def stsb_items(shared: Path) -> tuple[list[Item], list[Path]]:
    path = shared / "stsb.jsonl"
    items: list[Item] = [
        (r["a"], r["b"], None, f"stsb/{i}")
        for i, r in enumerate(_jsonl(path))
        if r["split"] == "train" and r["label"] >= 4
    ]
    return items, [path]


def batches_of(items: Sequence[Item], size: int, rng: random.Random) -> list[list[Item]]:
    """Batches of ``size`` with at most one pair per group; batches under half full are dropped."""
    pending, batches = list(items), []
    while pending:
        batch: list[Item] = []
        groups: set[str] = set()
        rest: list[Item] = []
        for item in pending:
            if len(batch) < size and item[3] not in groups:
                batch.append(item)
                groups.add(item[3])
            else:
                rest.append(item)
        batches.append(batch)
        pending = rest
    kept = [b for b in batches if len(b) >= size // 2]
    rng.shuffle(kept)
    return kept


def train(
    batches: list[list[Item]], threads: int, seed: int = SEED
) -> tuple[dict[str, Any], list[float], float]:
    """One epoch over ``batches``; the trained bias and LayerNorm values, by the bundled model's
    parameter names, the losses and the seconds it took."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    import torch.nn.functional as functional
    from sentence_transformers import SentenceTransformer

    from semcache.embedding.base import bundled_model_path

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    model = SentenceTransformer(bundled_model_path(), device="cpu", local_files_only=True)
    model.max_seq_length = MAX_TOKENS
    trainable = []
    for name, parameter in model.named_parameters():
        tuned = name.endswith("bias") or "LayerNorm" in name
        parameter.requires_grad_(tuned)
        if tuned:
            trainable.append((name, parameter))
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=LEARNING_RATE, weight_decay=0.0)
    total = len(batches)
    warm = max(1, int(WARMUP * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm)),
    )

    def embed(texts: list[str]) -> Any:
        return functional.normalize(model(model.tokenize(texts))["sentence_embedding"], dim=-1)

    model.train()
    losses, start = [], time.perf_counter()
    for step, batch in enumerate(batches):
        negatives = [b[2] for b in batch if b[2] is not None]
        vectors = embed([b[0] for b in batch] + [b[1] for b in batch] + negatives)
        anchors, others = vectors[: len(batch)], vectors[len(batch) :]
        loss = functional.cross_entropy(SCALE * anchors @ others.T, torch.arange(len(batch)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.item()))
        if step % 20 == 0 or step == total - 1:
            print(f"step {step + 1}/{total} loss {sum(losses[-20:]) / len(losses[-20:]):.4f}")
    seconds = time.perf_counter() - start
    prefix = "0.auto_model."  # sentence-transformers' name of the transformer module
    values = {
        name.removeprefix(prefix).removeprefix("0.model."): p.detach().cpu().numpy().copy()
        for name, p in trainable
    }
    return values, losses, seconds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--without", choices=SOURCES, help="leave this source out (for LOSO)")
    parser.add_argument("--out", help="where to write the weights (default: the shipped file)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--seed", type=int, default=SEED,
        help="another seed, to see the noise (written beside the copies, never as the shipped part)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    rng = random.Random(args.seed)
    shared = Path(args.shared)
    if not (shared / "stsb.jsonl").exists():
        sys.exit(f"{shared}/stsb.jsonl not found: pass --shared")
    items: list[Item] = []
    inputs: list[Path] = []
    counts: dict[str, int] = {}
    for source in SOURCES:
        if source == args.without:
            continue
        if source == "written":
            found, files = written_items(rng)
        elif source == "pairs":
            found, files = pairs_items(rng)
        else:
            found, files = stsb_items(shared)
        items += found
        inputs += files
        counts[source] = len(found)
    batches = batches_of(items, BATCH, rng)
    used = sum(len(b) for b in batches)
    print(f"pairs {counts}, {used} in {len(batches)} batches of up to {BATCH}")
    values, losses, seconds = train(batches, args.threads, args.seed)

    from safetensors.numpy import save_file

    name = f"without-{args.without}" if args.without else "shipped"
    if args.seed != SEED:  # a look at the noise: never in place of the shipped part or its record
        name += f"-seed{args.seed}"
    shipped = not args.without and args.seed == SEED
    out = Path(args.out) if args.out else (SHIPPED if shipped else RESULTS / f"{name}.safetensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(values, str(out))
    out.chmod(0o644)
    record = {
        "name": name,
        "command": "python training/tune_embedder.py"
        + (f" --without {args.without}" if args.without else "")
        + (f" --seed {args.seed}" if args.seed != SEED else ""),
        "seed": args.seed,
        "batch": BATCH,
        "learning_rate": LEARNING_RATE,
        "scale": SCALE,
        "max_tokens": MAX_TOKENS,
        "threads": args.threads,
        "pairs": counts,
        "pairs_used": used,
        "steps": len(batches),
        "seconds": round(seconds, 1),
        "parameters": int(sum(v.size for v in values.values())),
        "loss_first_20": round(sum(losses[:20]) / len(losses[:20]), 4),
        "loss_last_20": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "inputs": {str(p.relative_to(p.parents[1])): _sha256(p) for p in inputs},
        "output": {"path": str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out),
                   "sha256": _sha256(out)},
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
