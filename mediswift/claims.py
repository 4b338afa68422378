"""The paper's claims a recipe with two or more model sizes can test, each beside what was measured
and a verdict: holds here, does not hold here, or this scale cannot decide.

Built from the stage manifests' records only (the pretrain stage's variants, the evaluate stage's
results) and, for the fine-tuning comparisons, the test predictions the finetune stage kept, so the
report can state it at any time. The claims:

1. At comparable training FLOPs a larger sparse model reaches a lower validation loss than a
   smaller dense one (Figure 2, Table 2: XL at 75% against Med dense). "Comparable": the sparse
   variant's FLOPs within `FLOPS_BAND` of the dense one's (the paper's pair is at 1.29x).
2. ... and a better downstream metric (Tables 3 and 4), per task.
3. At equal steps sparse pre-training costs loss against dense of the same size, and the gap grows
   with sparsity (Tables 2 and 6).
4. Against the iso-FLOPs dense baseline of its size (a dense run trained to the sparse variant's
   FLOPs with its own schedule: `pretrain.iso_flops_baselines`), the sparse model reaches a lower
   validation loss: the FLOPs saving is worth having. The paper trains no such baseline; this is
   the claim its FLOPs savings imply.

Intervals. A fine-tuning difference gets a paired percentile bootstrap over test examples (the
same resampled examples for both models and every seed, `BOOTSTRAP_RESAMPLES`, seeded): its 95%
interval wholly above zero (in the claimed direction) holds, wholly below does not, anything else
cannot decide. Without the prediction files the two models' own intervals are compared instead
(non-overlapping or undecided), which is more conservative. A pre-training loss has no interval:
each variant is one pre-training seed and its validation loss is recorded as one mean. A loss
difference under `LOSS_TOLERANCE` nats is read as undecided; that tolerance is an assumption (the
order of seed-to-seed differences of small language models), not a measured interval.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediswift.finetune.registry import task_class
from mediswift.finetune.stats import BOOTSTRAP_RESAMPLES, Metric, read_predictions
from mediswift.finetune.tables import MODE_NAMES

HOLDS = "holds here"
FAILS = "does not hold here"
UNDECIDED = "this scale cannot decide"
NOT_TESTED = "not tested"

# A loss difference smaller than this (nats per token) decides nothing (see the module docstring).
LOSS_TOLERANCE = 0.02
# Training FLOPs ratios (larger sparse / smaller dense) read as comparable.
FLOPS_BAND = (0.75, 1.34)

Interval = tuple[float, float]

# What the paper measured for each claim (its Med and XL models; Tables 2, 3, 4 and 6).
PAPER = {
    1: "XL s=75% 2.141 vs Med dense 2.234 (-0.093) at 1.29x the FLOPs (Table 2)",
    3: "gaps +0.031, +0.141 (Med); +0.125, +0.234 (Large); +0.033, +0.162 (XL) (Table 6)",
    4: "not run in the paper",
}
PAPER_TASKS = {
    "pubmedqa": "XL s=75% 75.4 vs Med dense 74.2 (+1.2, Table 3)",
    "hoc": "XL s=75% 84.71 vs Med dense 85.15 (-0.44: not on HoC, Table 4)",
}


@dataclass(frozen=True)
class Claim:
    number: int
    claim: str  # the paper's claim, as this comparison tests it
    compared: str  # the variants compared
    measured: str
    interval: str
    verdict: str
    paper: str = "-"  # what the paper measured


def loss_verdict(diff: float, tolerance: float = LOSS_TOLERANCE) -> str:
    """`diff`: how far the claim's direction is ahead (positive: as claimed), in nats."""
    if diff > tolerance:
        return HOLDS
    if diff < -tolerance:
        return FAILS
    return UNDECIDED


def difference_verdict(ci: Interval) -> str:
    """The 95% interval of (claimed better - claimed worse): above 0 holds, below 0 fails."""
    lo, hi = ci
    if lo > 0:
        return HOLDS
    if hi < 0:
        return FAILS
    return UNDECIDED


def overlap_verdict(better: Interval, worse: Interval) -> str:
    """Two models' own 95% intervals, `better` the one claimed better (higher metric)."""
    if better[0] > worse[1]:
        return HOLDS
    if better[1] < worse[0]:
        return FAILS
    return UNDECIDED


def gap_verdict(gaps: Sequence[float], tolerance: float = LOSS_TOLERANCE) -> str:
    """Claim 3 for one size: `gaps` are sparse-minus-dense losses at equal steps, by increasing
    sparsity. Holds when every gap is above the tolerance and each grows by more than it; fails
    when a gap is below -tolerance (sparse better) or shrinks by more than it. One gap tests
    only its first half (sparse is worse)."""
    if not gaps:
        return NOT_TESTED
    steps = [b - a for a, b in zip(gaps, gaps[1:], strict=False)]
    if any(g < -tolerance for g in gaps) or any(s < -tolerance for s in steps):
        return FAILS
    if all(g > tolerance for g in gaps) and all(s > tolerance for s in steps):
        return HOLDS
    return UNDECIDED


def paired_difference_interval(
    metric: Metric,
    better: Sequence[Sequence[Any]],
    worse: Sequence[Sequence[Any]],
    golds: Sequence[Any],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """95% percentile interval of seed-mean(better) - seed-mean(worse) over test examples
    resampled together (each model's seeds aligned to `golds`)."""
    n = len(golds)
    if n == 0 or not better or not worse:
        raise ValueError("a paired interval needs test examples and predictions of both models")
    rng = random.Random(seed)

    def mean(per_seed: Sequence[Sequence[Any]], idx: list[int], g: list[Any]) -> float:
        return sum(metric([p[i] for i in idx], g) for p in per_seed) / len(per_seed)

    values = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        g = [golds[i] for i in idx]
        values.append(mean(better, idx, g) - mean(worse, idx, g))
    values.sort()
    return values[int(0.025 * (resamples - 1))], values[int(round(0.975 * (resamples - 1)))]


def chosen_predictions(
    home: Path, finetune: dict[str, Any], result: dict[str, Any], mode: str
) -> dict[str, list[tuple[str, Any, Any]]] | None:
    """Seed -> [(id, prediction, gold)] on test of the (batch, lr) chosen for `result` (an
    evaluated sweep), sorted by id; None when a file is missing."""
    chosen = result["selected"][mode]
    sweeps = [
        s
        for s in finetune.get("sweeps", [])
        if s["variant"] == result["variant"] and s["task"] == result["task"]
    ]
    out = {}
    for sweep in sweeps:
        for p in sweep["points"]:
            if (p["batch_size"], p["lr"]) != (chosen["batch_size"], chosen["lr"]):
                continue
            path = home / p["unit"] / f"predictions_{mode}.jsonl"
            if not path.is_file():
                return None
            ids, preds, golds = read_predictions(path, "test")
            out[str(p["seed"])] = sorted(zip(ids, preds, golds, strict=True), key=lambda r: r[0])
    return out or None


def metric_difference(
    home: Path | None, finetune: dict[str, Any] | None, better: dict, worse: dict, mode: str
) -> Interval | None:
    """The paired interval of better - worse (evaluated sweeps of one task), or None when the
    predictions are not there or do not cover the same test examples."""
    if home is None or finetune is None:
        return None
    a = chosen_predictions(home, finetune, better, mode)
    b = chosen_predictions(home, finetune, worse, mode)
    if not a or not b:
        return None
    ids = [r[0] for r in next(iter(a.values()))]
    if any([r[0] for r in rows] != ids for rows in [*a.values(), *b.values()]):
        return None
    golds = [r[2] for r in next(iter(a.values()))]
    metric: Metric = task_class(better["task"])().metric
    return paired_difference_interval(
        metric,
        [[r[1] for r in rows] for rows in a.values()],
        [[r[1] for r in rows] for rows in b.values()],
        golds,
    )


def _main_variants(variants: Sequence[dict]) -> list[dict]:
    """The variants trained for the recipe's steps (not iso-FLOPs baselines)."""
    return [v for v in variants if not v.get("iso_flops_of")]


def sizes_by_params(variants: Sequence[dict]) -> list[str]:
    """The sizes trained, smallest first (by dense non-embedding parameters)."""
    params: dict[str, float] = {}
    for v in _main_variants(variants):
        n = v.get("non_embedding_params") or v["active_non_embedding_params"] / max(
            1e-9, 1.0 - v["sparsity"]
        )
        params[v["model"]] = n
    return sorted(params, key=lambda m: params[m])


def comparable_pairs(variants: Sequence[dict]) -> list[tuple[dict, dict, float]]:
    """(larger sparse, smaller dense, FLOPs ratio) for every sparse variant of a larger size
    whose training FLOPs are within `FLOPS_BAND` of a smaller size's dense run."""
    order = sizes_by_params(variants)
    main = _main_variants(variants)
    dense = {v["model"]: v for v in main if v["sparsity"] == 0}
    out = []
    for i, small in enumerate(order):
        if small not in dense:
            continue
        for big in order[i + 1 :]:
            for v in main:
                if v["model"] != big or v["sparsity"] == 0:
                    continue
                ratio = v["train_flops"] / dense[small]["train_flops"]
                if FLOPS_BAND[0] <= ratio <= FLOPS_BAND[1]:
                    out.append((v, dense[small], ratio))
    return out


NO_LOSS_INTERVAL = f"none (one pre-training seed; under {LOSS_TOLERANCE} nats: undecided)"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(ci: Interval | None) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]" if ci else "-"


def pretrain_claims(variants: Sequence[dict]) -> list[Claim]:
    """Claims 1, 3 and 4 from the pretrain stage's variant records."""
    out = []
    pairs = comparable_pairs(variants)
    for big, small, ratio in pairs:
        diff = small["final_val_loss"] - big["final_val_loss"]
        out.append(
            Claim(
                1,
                "at comparable training FLOPs, the larger sparse model reaches a lower "
                "validation loss than the smaller dense one",
                f"{big['name']} vs {small['name']} ({ratio:.2f}x the FLOPs)",
                f"{big['final_val_loss']:.3f} vs {small['final_val_loss']:.3f} ({-diff:+.3f} nats)",
                NO_LOSS_INTERVAL,
                loss_verdict(diff),
                PAPER[1],
            )
        )
    if not pairs:
        out.append(
            Claim(1, "at comparable training FLOPs, the larger sparse model reaches a lower "
                  "validation loss than the smaller dense one", "-",
                  f"no sparse variant of a larger size within {FLOPS_BAND[0]}-{FLOPS_BAND[1]}x "
                  "the FLOPs of a smaller dense one", "-", NOT_TESTED)
        )  # fmt: skip
    main = _main_variants(variants)
    for size in sizes_by_params(variants):
        mine = sorted((v for v in main if v["model"] == size), key=lambda v: v["sparsity"])
        if not mine or mine[0]["sparsity"] != 0 or len(mine) < 2:
            continue
        dense = mine[0]
        gaps = [v["final_val_loss"] - dense["final_val_loss"] for v in mine[1:]]
        out.append(
            Claim(
                3,
                "at equal steps, sparse is worse than dense of the same size, and the gap grows "
                "with sparsity",
                f"{', '.join(v['name'] for v in mine[1:])} vs {dense['name']}",
                ("gaps " if len(gaps) > 1 else "gap ")
                + ", ".join(
                    f"{g:+.3f} ({v['sparsity']:.0%})" for g, v in zip(gaps, mine[1:], strict=True)
                )
                + ("" if len(gaps) > 1 else "; its growth: not tested (one sparse level)"),
                NO_LOSS_INTERVAL,
                gap_verdict(gaps),
                PAPER[3],
            )
        )
    iso = {(v["model"], v["iso_flops_of"]): v for v in variants if v.get("iso_flops_of")}
    for v in main:
        base = iso.get((v["model"], v["sparsity"]))
        if v["sparsity"] == 0 or base is None:
            continue
        diff = base["final_val_loss"] - v["final_val_loss"]
        out.append(
            Claim(
                4,
                "the sparse model reaches a lower validation loss than the dense model of its "
                "size trained for the same FLOPs (not run in the paper)",
                f"{v['name']} vs {base['name']}",
                f"{v['final_val_loss']:.3f} vs {base['final_val_loss']:.3f} ({-diff:+.3f} nats)",
                NO_LOSS_INTERVAL,
                loss_verdict(diff),
                PAPER[4],
            )
        )
    return out


def finetune_claims(
    variants: Sequence[dict],
    results: Sequence[dict],
    mode: str,
    difference: Callable[[dict, dict, str], Interval | None] | None = None,
) -> list[Claim]:
    """Claim 2 per task from the evaluate stage's results (`mode`: the prediction mode read);
    `difference(better, worse, mode)` gives the paired interval when it can."""
    out = []
    by = {(r["variant"], r["task"]): r for r in results}
    for big, small, ratio in comparable_pairs(variants):
        for task in dict.fromkeys(r["task"] for r in results):
            a, b = by.get((big["name"], task)), by.get((small["name"], task))
            if a is None or b is None or mode not in a["selected"] or mode not in b["selected"]:
                continue
            sa, sb = a["selected"][mode], b["selected"][mode]
            ci = difference(a, b, mode) if difference else None
            if ci is not None:
                interval = f"difference {_ci(ci)} (paired bootstrap)"
                verdict = difference_verdict(ci)
            elif sa.get("test_ci95") and sb.get("test_ci95"):
                interval = f"{_ci(sa['test_ci95'])} vs {_ci(sb['test_ci95'])} (each model's own)"
                verdict = overlap_verdict(tuple(sa["test_ci95"]), tuple(sb["test_ci95"]))
            else:
                interval, verdict = "-", UNDECIDED
            out.append(
                Claim(
                    2,
                    f"at comparable training FLOPs, the larger sparse model also fine-tunes to "
                    f"a better {task} test {a['metric']}",
                    f"{big['name']} vs {small['name']} ({ratio:.2f}x the FLOPs)",
                    f"{_pct(sa['test_mean'])} vs {_pct(sb['test_mean'])} "
                    f"({100 * (sa['test_mean'] - sb['test_mean']):+.1f} points)",
                    interval,
                    verdict,
                    PAPER_TASKS.get(task, "-"),
                )
            )
    return out


def claims(
    variants: Sequence[dict],
    results: Sequence[dict] | None = None,
    mode: str | None = None,
    difference: Callable[[dict, dict, str], Interval | None] | None = None,
) -> list[Claim]:
    """Every claim the records can test, in the paper's order (claims 1, 2, 3, 4)."""
    rows = pretrain_claims(variants)
    if results and mode:
        rows += finetune_claims(variants, results, mode, difference)
    return sorted(rows, key=lambda c: c.number)


def claims_apply(variants: Sequence[dict]) -> bool:
    """Whether the claims apply: two or more model sizes were pre-trained."""
    return len(sizes_by_params(variants)) >= 2


def claims_markdown(rows: Sequence[Claim], mode: str | None = None) -> str:
    """The claims table (a claim's text and the paper's figure on its first row only) and how
    to read it; `mode`: the prediction mode claim 2 reads."""
    lines = [
        "| # | Paper's claim | In the paper | Compared here | Measured | 95% interval | Verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    shown: set[tuple[int, str]] = set()
    for c in rows:
        first = (c.number, c.claim) not in shown
        shown.add((c.number, c.claim))
        claim, paper = (c.claim, c.paper) if first else ("", "")
        lines.append(
            f"| {c.number} | {claim} | {paper} | {c.compared} | {c.measured} | {c.interval} | "
            f"**{c.verdict}** |"
        )
    notes = [
        "",
        "Validation losses: nats per token, one pre-training seed each, no interval (a difference "
        f"under {LOSS_TOLERANCE} nats is read as undecided: an assumed tolerance, not a measured "
        "one). Fine-tuning: test metric in %, mean over seeds at the (batch, lr) chosen on dev"
        + (f" ({MODE_NAMES.get(mode, mode)})" if mode else "")
        + "; the interval is a paired percentile bootstrap over test examples of the difference "
        "(claimed better minus claimed worse; above 0 holds, below 0 does not hold, across 0 "
        "cannot decide), or, without the predictions, the two models' own intervals "
        "(non-overlapping or undecided). Comparable FLOPs: within "
        f"{FLOPS_BAND[0]}-{FLOPS_BAND[1]}x.",
    ]
    return "\n".join(lines + notes)
