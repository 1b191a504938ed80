"""Turn the per-request outcomes of a demo run into the report: numbers, text and JSON.

Kept apart from the runner so the arithmetic (percentiles, what counts as a wrong hit or a missed
opportunity) can be read and tested without a cache, a model or a server.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Tier = Literal["exact", "semantic", "provider", "error"]
TIERS: tuple[Tier, ...] = ("exact", "semantic", "provider")
REQUEST_KINDS = ("original", "repeat", "paraphrase", "lookalike")


@dataclass(frozen=True)
class Outcome:
    """What happened to one request: where the answer came from, how long it took, was it right."""

    id: int
    kind: str
    text: str
    tier: Tier
    latency_ms: float
    expected: dict[str, Any]
    got: dict[str, Any] | None
    tokens: int = 0
    similarity: float | None = None
    matched_prompt: str | None = None
    error: str | None = None

    @property
    def is_hit(self) -> bool:
        """Served by the cache, so no provider call was made."""
        return self.tier in ("exact", "semantic")

    @property
    def wrong_fields(self) -> list[str]:
        """The Ticket fields whose value differs from the data file's answer."""
        if self.got is None:
            return []
        return [name for name, value in self.expected.items() if self.got.get(name) != value]


@dataclass
class DemoReport:
    """Everything the demo prints, in a form a test or a notebook can check."""

    mode: str
    model: str
    threshold: float
    requests: int
    provider_calls: int
    provider_calls_seen_by_server: int | None
    errors: int
    hits: dict[str, int]
    misses: int
    calls_avoided: int
    calls_avoided_pct: float
    latency_ms: dict[str, dict[str, float | None]]
    tokens_saved: int
    wrong_hits: int
    wrong_hits_by_kind: dict[str, int]
    wrong_fields: dict[str, int]
    wrong_examples: list[dict[str, Any]]
    hits_by_kind: dict[str, dict[str, int]]
    missed_paraphrases: int
    paraphrases: int
    repeats_missed: int
    lookalikes_served_from_cache: int
    lookalikes: int
    provider_answers_differing: int
    similarity: dict[str, dict[str, float | None]]
    wall_time_s: float
    cache_stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON dict of the report."""
        return asdict(self)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy's default computes it.

    Written out because the demo should not need numpy just to print two numbers per tier.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(
    outcomes: list[Outcome],
    *,
    mode: str,
    model: str,
    threshold: float,
    wall_time_s: float,
    server_calls: int | None,
    cache_stats: dict[str, Any],
    top_wrong: int = 5,
) -> DemoReport:
    """Aggregate per-request outcomes into the report's numbers."""
    hits = {tier: sum(o.tier == tier for o in outcomes) for tier in ("exact", "semantic")}
    provider = [o for o in outcomes if o.tier == "provider"]
    semantic = [o for o in outcomes if o.tier == "semantic"]
    served = [o for o in outcomes if o.tier != "error"]
    wrong = [o for o in outcomes if o.is_hit and o.wrong_fields]
    wrong.sort(key=lambda o: -(o.similarity or 0.0))
    wrong_fields: dict[str, int] = {}
    for outcome in wrong:
        for name in outcome.wrong_fields:
            wrong_fields[name] = wrong_fields.get(name, 0) + 1
    by_kind = {
        kind: {
            "requests": sum(o.kind == kind for o in outcomes),
            **{tier: sum(o.kind == kind and o.tier == tier for o in outcomes) for tier in TIERS},
            "wrong": sum(o.kind == kind for o in wrong),
        }
        for kind in REQUEST_KINDS
    }
    latency: dict[str, dict[str, float | None]] = {}
    for tier in TIERS:
        values = [o.latency_ms for o in outcomes if o.tier == tier]
        latency[tier] = {
            "n": len(values),
            "p50": round(percentile(values, 50), 2) if values else None,
            "p95": round(percentile(values, 95), 2) if values else None,
        }
    avoided = hits["exact"] + hits["semantic"]
    return DemoReport(
        mode=mode,
        model=model,
        threshold=threshold,
        requests=len(outcomes),
        provider_calls=len(provider),
        provider_calls_seen_by_server=server_calls,
        errors=len(outcomes) - len(served),
        hits=hits,
        misses=len(provider),
        calls_avoided=avoided,
        calls_avoided_pct=round(100 * avoided / len(outcomes), 1) if outcomes else 0.0,
        latency_ms=latency,
        tokens_saved=sum(o.tokens for o in outcomes if o.is_hit),
        wrong_hits=len(wrong),
        wrong_hits_by_kind={kind: by_kind[kind]["wrong"] for kind in REQUEST_KINDS},
        wrong_fields=wrong_fields,
        wrong_examples=[_example(o) for o in wrong[:top_wrong]],
        hits_by_kind=by_kind,
        missed_paraphrases=by_kind["paraphrase"]["provider"],
        paraphrases=by_kind["paraphrase"]["requests"],
        repeats_missed=by_kind["repeat"]["provider"],
        lookalikes_served_from_cache=by_kind["lookalike"]["exact"]
        + by_kind["lookalike"]["semantic"],
        lookalikes=by_kind["lookalike"]["requests"],
        provider_answers_differing=sum(bool(o.wrong_fields) for o in provider),
        similarity={
            "right": _spread([o.similarity for o in semantic if not o.wrong_fields]),
            "wrong": _spread([o.similarity for o in semantic if o.wrong_fields]),
        },
        wall_time_s=round(wall_time_s, 2),
        cache_stats=cache_stats,
    )


def _spread(values: list[float | None]) -> dict[str, float | None]:
    """Min, median and max of the similarities of a set of semantic hits (None when empty)."""
    known = [v for v in values if v is not None]
    if not known:
        return {"n": 0, "min": None, "p50": None, "max": None}
    return {
        "n": len(known),
        "min": round(min(known), 4),
        "p50": round(percentile(known, 50), 4),
        "max": round(max(known), 4),
    }


def _example(outcome: Outcome) -> dict[str, Any]:
    got = outcome.got or {}
    return {
        "id": outcome.id,
        "kind": outcome.kind,
        "tier": outcome.tier,
        "similarity": None if outcome.similarity is None else round(outcome.similarity, 4),
        "text": outcome.text,
        "matched_prompt": outcome.matched_prompt,
        "wrong": {name: [got.get(name), outcome.expected[name]] for name in outcome.wrong_fields},
    }


def _ms(value: float | None) -> str:
    return "      -" if value is None else f"{value:7.1f}"


def _short(text: str | None, width: int = 96) -> str:
    if text is None:
        return "(not recorded)"
    return text if len(text) <= width else text[: width - 1] + "…"


def format_report(report: DemoReport) -> str:
    """The fixed, human-readable report the demo prints at the end."""
    server = report.provider_calls_seen_by_server
    lines = [
        f"semcache demo: {report.mode} provider, model {report.model}, "
        f"threshold {report.threshold}, {report.wall_time_s:.1f} s",
        "",
        f"requests                 {report.requests:6d}",
        f"provider calls made      {report.provider_calls:6d}"
        + ("" if server is None else f"   (stub server counted {server})"),
        f"provider calls avoided   {report.calls_avoided:6d}   ({report.calls_avoided_pct:.1f} %)",
        f"  exact hits             {report.hits['exact']:6d}",
        f"  semantic hits          {report.hits['semantic']:6d}",
        f"misses                   {report.misses:6d}",
    ]
    if report.errors:
        lines.append(f"errors                   {report.errors:6d}")
    lines += ["", "latency (ms)                 n      p50      p95"]
    for tier, label in (
        ("exact", "exact hits"),
        ("semantic", "semantic hits"),
        ("provider", "provider calls"),
    ):
        stats = report.latency_ms[tier]
        lines.append(
            f"  {label:<22}{int(stats['n'] or 0):6d}  {_ms(stats['p50'])}  {_ms(stats['p95'])}"
        )
    lines += [
        "",
        f"tokens saved             {report.tokens_saved:6d}",
        "",
        "by request kind      requests  exact  semantic  provider  wrong",
    ]
    for kind, row in report.hits_by_kind.items():
        lines.append(
            f"  {kind:<18}{row['requests']:9d}  {row['exact']:5d}  {row['semantic']:8d}"
            f"  {row['provider']:8d}  {row['wrong']:5d}"
        )
    wrong_pct = 100 * report.wrong_hits / max(report.calls_avoided, 1)
    by_kind = ", ".join(f"{k} {v}" for k, v in report.wrong_hits_by_kind.items() if k != "original")
    lines += [
        "",
        f"wrong answers served by the cache: {report.wrong_hits} "
        f"({wrong_pct:.1f} % of hits; {by_kind})",
    ]
    if report.wrong_fields:
        fields = ", ".join(f"{k} {v}" for k, v in sorted(report.wrong_fields.items()))
        lines.append(f"  wrong fields: {fields}")
    for example in report.wrong_examples:
        diffs = "; ".join(
            f"{k}: served {g!r}, expected {e!r}" for k, (g, e) in example["wrong"].items()
        )
        sim = "-" if example["similarity"] is None else f"{example['similarity']:.3f}"
        lines += [
            f"  #{example['id']} {example['kind']}, {example['tier']} hit, similarity {sim}: {diffs}",
            f"      request: {_short(example['text'])}",
            f"      matched: {_short(example['matched_prompt'])}",
        ]
    for label in ("right", "wrong"):
        spread = report.similarity[label]
        if spread["n"]:
            lines.append(
                f"  similarity of {label} semantic hits: min {spread['min']:.3f}, "
                f"median {spread['p50']:.3f}, max {spread['max']:.3f} (n={spread['n']})"
            )
    lines += [
        f"look-alikes served from the cache: {report.lookalikes_served_from_cache}"
        f" of {report.lookalikes}",
        f"missed opportunities: {report.missed_paraphrases} of {report.paraphrases} paraphrases "
        f"went to the provider ({100 * report.missed_paraphrases / max(report.paraphrases, 1):.1f} %)",
    ]
    if report.repeats_missed:
        lines.append(f"  repeats that went to the provider: {report.repeats_missed}")
    if report.provider_answers_differing:
        lines.append(
            f"provider answers differing from the data file: "
            f"{report.provider_answers_differing} of {report.provider_calls}"
        )
    # Scalars only: nested per-scope figures (if the cache reports any) are in report.json.
    cache_line = ", ".join(
        f"{k}={v}" for k, v in report.cache_stats.items() if not isinstance(v, dict | list)
    )
    lines += ["", f"cache.stats() (whole file, every run): {cache_line}"]
    return "\n".join(lines)
