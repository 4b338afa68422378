"""The paper's claims a recipe with two or more model sizes can test, each beside what was
measured and a verdict: holds here, does not hold here, or this scale cannot decide.

Built from the stage manifests' records only (the pretrain stage's variants, the evaluate stage's
results) and, for the fine-tuning comparisons, the test predictions the finetune stage kept, so the
report can state it at any time. Variants are grouped into arms (a size at a sparsity level; its
pre-training seeds are `pretrain.seeds`). The claims:

1. A larger sparse model reaches a lower validation loss than a smaller dense one with the same
   active non-embedding parameters (within `EQUAL_ACTIVE`), at the higher training FLOPs that
   costs (Figure 2, Table 2: XL at 75% against Med dense, 302M active each, 1.29x the FLOPs).
   A pair matched on training FLOPs instead (`FLOPS_BAND`) is reported too, labelled as the
   iso-FLOPs variant: a different, harder claim than the paper's.
2. ... and a better downstream metric (Tables 3 and 4), per task.
3. At equal steps sparse pre-training costs loss against dense of the same size, and the gap grows
   with sparsity (Tables 2 and 6).
4. Against the iso-FLOPs dense baseline of its size (`pretrain.iso_flops_baselines`), the sparse
   model reaches a lower validation loss (the claim the paper's FLOPs savings imply).

The precondition gate. Claims 1 and 2 are capacity claims: a sparse model of a larger size can only
show its extra capacity where capacity pays at the budget trained. So they are decided only where
the larger size's dense arm beats the smaller dense one beyond noise (the loss for claim 1; the
loss and, when the larger dense arm was fine-tuned, the task's metric for claim 2); otherwise
they read "this scale cannot decide (capacity does not pay at this budget)".

Noise. A loss difference between two arms is decided against the spread of pre-training seeds:
the seeds' standard deviation, pooled over every arm with two or more seeds (one number for all
arms: with two or three seeds an arm's own estimate is too rough), gives the difference a
standard error; beyond `Z` standard errors it is decided. Without two seeds of any arm there is no
measured spread and nothing about a loss is decided.

Fine-tuning intervals: a hierarchical percentile bootstrap of the difference (claimed better minus
claimed worse): each resample draws the test documents (the same for both arms), then each arm's
pre-training seeds, then each drawn seed's fine-tuning seeds, so the interval carries the variance
of all three; with one pre-training seed it conditions on that run, and the table says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mediswift.arms import (
    FAILS,
    HOLDS,
    UNDECIDED,
    Arm,
    Difference,
    Interval,
    Z,
    arms,
    loss_diff,
    seed_sd,
)
from mediswift.finetune.registry import task_class
from mediswift.finetune.stats import Metric
from mediswift.finetune.tables import MODE_NAMES
from mediswift.model.sizes import SIZES

NO_CAPACITY = "this scale cannot decide (capacity does not pay at this budget)"
NOT_TESTED = "not tested"

# Active non-embedding parameters read as equal (the paper's pairs: 302M against 302M).
EQUAL_ACTIVE = 0.10
# Training FLOPs ratios (larger sparse / smaller dense) of the iso-FLOPs variant of claim 1.
FLOPS_BAND = (0.75, 1.34)

# What the paper measured for each claim (its Med and XL models; Tables 2, 3, 4 and 6).
PAPER = {
    1: "XL s=75% 2.141 vs Med dense 2.234 (-0.093), 302M active non-embedding parameters each, "
    "at 1.29x the FLOPs (Table 2)",
    3: "gaps +0.031, +0.141 (Med); +0.125, +0.234 (Large); +0.033, +0.162 (XL) (Table 6)",
    4: "not run in the paper",
}
PAPER_TASKS = {
    "pubmedqa": "XL s=75% 75.4 vs Med dense 74.2 (+1.2, Table 3)",
    "hoc": "XL s=75% 84.71 vs Med dense 85.15 (-0.44: not on HoC, Table 4)",
}
CLAIM_1 = (
    "at equal active non-embedding parameters (and the higher training FLOPs that costs), the "
    "larger sparse model reaches a lower validation loss than the smaller dense one"
)
CLAIM_1_ISO = (
    "iso-FLOPs variant (not the paper's comparison): at comparable training FLOPs, the larger "
    "sparse model reaches a lower validation loss than the smaller dense one"
)


@dataclass(frozen=True)
class Claim:
    number: int
    claim: str  # the paper's claim, as this comparison tests it
    compared: str  # the arms compared
    measured: str
    interval: str
    verdict: str
    paper: str = "-"  # what the paper measured


@dataclass(frozen=True)
class Pair:
    """A larger sparse arm against a smaller dense one, with the precondition's dense arm."""

    big: Arm
    small: Arm
    flops_ratio: float
    equal_active: bool  # the paper's pairing; else the iso-FLOPs variant
    gate: Arm | None  # the larger size's dense arm (the precondition), if trained

    def label(self) -> str:
        active = f"{self.big.active:,} vs {self.small.active:,} active non-embedding parameters"
        return f"{self.big.name} vs {self.small.name} ({active}; {self.flops_ratio:.2f}x the FLOPs)"


def difference_verdict(ci: Interval) -> str:
    """The 95% interval of (claimed better - claimed worse): above 0 holds, below 0 fails."""
    lo, hi = ci
    if lo > 0:
        return HOLDS
    if hi < 0:
        return FAILS
    return UNDECIDED


def gap_verdict(gaps: Sequence[float], tolerance: float | None) -> str:
    """Claim 3 for one size: `gaps` are sparse-minus-dense losses at equal steps, by increasing
    sparsity; `tolerance` the measured noise of a difference (None: not measured). Holds when
    every gap is above it and each grows by more than it; fails when a gap is below -tolerance
    (sparse better) or shrinks by more than it. One gap tests only its first half."""
    if not gaps:
        return NOT_TESTED
    if tolerance is None:
        return UNDECIDED
    steps = [b - a for a, b in zip(gaps, gaps[1:], strict=False)]
    if any(g < -tolerance for g in gaps) or any(s < -tolerance for s in steps):
        return FAILS
    if all(g > tolerance for g in gaps) and all(s > tolerance for s in steps):
        return HOLDS
    return UNDECIDED


def _main(all_arms: Sequence[Arm]) -> list[Arm]:
    return [a for a in all_arms if a.iso_flops_of is None]


def sizes_by_params(variants: Sequence[dict]) -> list[str]:
    """The sizes trained, smallest first (by dense non-embedding parameters)."""
    size = {a.model: a.size for a in _main(arms(variants))}
    return sorted(size, key=lambda m: size[m])


def pairs(all_arms: Sequence[Arm]) -> list[Pair]:
    """Every sparse arm of a larger size against every dense arm of a smaller one with equal
    active non-embedding parameters (the paper's pairing) or, failing that, comparable training
    FLOPs (the iso-FLOPs variant); each with its precondition arm: the dense arm of the sparse
    model's size, else of the nearest larger size trained."""
    main = _main(all_arms)
    dense = sorted((a for a in main if a.sparsity == 0), key=lambda a: a.size)
    out = []
    for big in (a for a in main if a.sparsity > 0):
        for small in (d for d in dense if d.size < big.size):
            ratio = big.train_flops / small.train_flops
            equal = abs(big.active / small.active - 1) <= EQUAL_ACTIVE
            if equal or FLOPS_BAND[0] <= ratio <= FLOPS_BAND[1]:
                gate = next((d for d in dense if d.size >= big.size), None)
                out.append(Pair(big, small, ratio, equal, gate))
    return out


def precondition(pair: Pair, sd: float | None) -> tuple[bool, str]:
    """Whether capacity pays at this budget (the larger dense arm's loss beats the smaller
    one's beyond noise), and what was measured."""
    if pair.gate is None:
        return False, f"precondition not tested (no dense arm of {pair.big.model} or larger)"
    d = loss_diff(pair.gate, pair.small, sd)
    text = (
        f"precondition {pair.gate.name} vs {pair.small.name}: {pair.gate.loss:.3f} vs "
        f"{pair.small.loss:.3f} ({-d.ahead:+.3f}"
        + (f" +- {Z * d.se:.3f})" if d.se is not None else ", no spread measured)")
    )
    return d.verdict == HOLDS, text


def _loss_text(a: Arm, b: Arm) -> str:
    return (
        f"{a.loss:.3f} vs {b.loss:.3f} ({a.loss - b.loss:+.3f} nats; {a.seeds_text()} vs "
        f"{b.seeds_text()})"
    )


def pretrain_claims(variants: Sequence[dict]) -> list[Claim]:
    """Claims 1, 3 and 4 from the pretrain stage's variant records."""
    all_arms = arms(variants)
    sd, _ = seed_sd(all_arms)
    return [*_claim_1(all_arms, sd), *_claim_3(all_arms, sd), *_claim_4(all_arms, sd)]


def _claim_1(all_arms: list[Arm], sd: float | None) -> list[Claim]:
    """Each larger sparse arm against the smaller dense one it is paired with."""
    out = []
    found = pairs(all_arms)
    for p in found:
        d = loss_diff(p.big, p.small, sd)
        ok, gate = precondition(p, sd)
        out.append(
            Claim(
                1,
                CLAIM_1 if p.equal_active else CLAIM_1_ISO,
                p.label(),
                f"{_loss_text(p.big, p.small)}; {gate}",
                d.interval(),
                d.verdict if ok else NO_CAPACITY,
                PAPER[1] if p.equal_active else "-",
            )
        )
    if not found:
        out.append(
            Claim(1, CLAIM_1, "-", "no sparse arm of a larger size with the active non-embedding "
                  "parameters or the FLOPs of a smaller dense arm", "-", NOT_TESTED)
        )  # fmt: skip
    return out


def _claim_3(all_arms: list[Arm], sd: float | None) -> list[Claim]:
    """Per size with a dense arm: its sparse arms' gaps at equal steps."""
    out = []
    main = _main(all_arms)
    for size in dict.fromkeys(a.model for a in main):
        mine = sorted((a for a in main if a.model == size), key=lambda a: a.sparsity)
        if len(mine) < 2 or mine[0].sparsity != 0:
            continue
        dense, sparse = mine[0], mine[1:]
        diffs = [loss_diff(dense, a, sd) for a in sparse]
        gaps = [d.ahead for d in diffs]  # sparse minus dense
        ses = [d.se for d in diffs if d.se is not None]
        tol = Z * max(ses) if ses and len(ses) == len(diffs) else None
        out.append(
            Claim(
                3,
                "at equal steps, sparse is worse than dense of the same size, and the gap grows "
                "with sparsity",
                f"{', '.join(a.name for a in sparse)} vs {dense.name}",
                ("gaps " if len(gaps) > 1 else "gap ")
                + ", ".join(f"{g:+.3f} ({a.sparsity:.0%})" for g, a in zip(gaps, sparse, strict=True))
                + ("" if len(gaps) > 1 else "; its growth: not tested (one sparse level)"),
                diffs[0].interval() if len(diffs) == 1 else (
                    f"+- {tol:.3f} ({Z:g} standard errors over seeds)" if tol is not None
                    else diffs[0].interval()),
                gap_verdict(gaps, tol),
                PAPER[3],
            )
        )  # fmt: skip
    return out


def _claim_4(all_arms: list[Arm], sd: float | None) -> list[Claim]:
    """Each sparse arm against the dense arm of its size trained for its FLOPs."""
    out = []
    iso = {(a.model, a.iso_flops_of): a for a in all_arms if a.iso_flops_of is not None}
    for a in _main(all_arms):
        base = iso.get((a.model, a.sparsity))
        if a.sparsity == 0 or base is None:
            continue
        d = loss_diff(a, base, sd)
        out.append(
            Claim(
                4,
                "the sparse model reaches a lower validation loss than the dense model of its "
                "size trained for the same FLOPs (not run in the paper)",
                f"{a.name} vs {base.name}",
                _loss_text(a, base),
                d.interval(),
                d.verdict,
                PAPER[4],
            )
        )
    return out


# --- Claim 2: fine-tuning, a hierarchical bootstrap over seeds and documents -----------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _ci(ci: Interval) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


def task_metrics(task: str, metric_name: str) -> list[tuple[str, Metric]]:
    """The task's metric, then any extra convention it reports (HoC: BioGPT's 11 classes)."""
    plugin = task_class(task)()
    return [(metric_name, plugin.metric), *((m.label, m.fn) for m in plugin.extra_metrics.values())]


def finetune_claims(
    variants: Sequence[dict],
    results: Sequence[dict],
    mode: str,
    difference: Difference | None = None,
) -> list[Claim]:
    """Claim 2 per task (and per metric convention) from the evaluate stage's results (`mode`:
    the prediction mode read), gated like claim 1 and, when the larger dense arm was fine-tuned,
    on its metric beating the smaller dense arm's too."""
    all_arms = arms(variants)
    sd, _ = seed_sd(all_arms)
    by_arm: dict[tuple[str, str], list[dict]] = {}
    arm_by_variant = {n: a for a in all_arms for n in a.variants}
    for r in results:
        if r["variant"] in arm_by_variant and mode in r.get("selected", {}):
            by_arm.setdefault((arm_by_variant[r["variant"]].name, r["task"]), []).append(r)
    out = []
    for p in pairs(all_arms):
        ok, gate_text = precondition(p, sd)
        for task in dict.fromkeys(r["task"] for r in results):
            a, b = by_arm.get((p.big.name, task)), by_arm.get((p.small.name, task))
            if not a or not b:
                continue
            gate = by_arm.get((p.gate.name, task)) if p.gate is not None else None
            for metric_name, metric in task_metrics(task, a[0]["metric"]):
                out.append(
                    _claim_2(p, task, metric_name, metric, a, b, gate, mode, difference,
                             ok, gate_text)
                )  # fmt: skip
    # One block per task and convention (the table names a claim on its first row only).
    first: dict[str, int] = {}
    return sorted(out, key=lambda c: first.setdefault(c.claim, len(first)))


def _mean_test(results: Sequence[dict], mode: str) -> float:
    return sum(r["selected"][mode]["test_mean"] for r in results) / len(results)


def _claim_2(
    p: Pair,
    task: str,
    metric_name: str,
    metric: Metric,
    a: Sequence[dict],
    b: Sequence[dict],
    gate: Sequence[dict] | None,
    mode: str,
    difference: Difference | None,
    loss_ok: bool,
    gate_text: str,
) -> Claim:
    found = difference(a, b, mode, metric) if difference else None
    main_metric = metric_name == a[0]["metric"]
    if found is not None:
        ma, mb = found.better, found.worse
        interval = f"difference {_ci(found.ci)} (hierarchical bootstrap: {found.what})"
        verdict = difference_verdict(found.ci)
    elif main_metric:
        ma, mb = _mean_test(a, mode), _mean_test(b, mode)
        interval, verdict = "- (test predictions not kept)", UNDECIDED
    else:  # another convention needs the predictions
        ma = mb = float("nan")
        interval, verdict = "- (test predictions not kept)", NOT_TESTED
    measured = f"{_pct(ma)} vs {_pct(mb)} ({100 * (ma - mb):+.1f} points)"
    down_text = ""
    if gate and difference is not None:
        g = difference(gate, b, mode, metric)
        if g is not None:
            loss_ok = loss_ok and difference_verdict(g.ci) == HOLDS
            gate_name = p.gate.name if p.gate is not None else "-"
            down_text = f"; downstream precondition {gate_name} vs {p.small.name}: {_ci(g.ci)}"
    if not loss_ok and verdict != NOT_TESTED:
        verdict = NO_CAPACITY
    label = metric_name if main_metric else f"{metric_name} (another convention)"
    return Claim(
        2,
        f"... and the larger sparse model also fine-tunes to a better {task} test {label}",
        p.label() if p.equal_active else f"iso-FLOPs variant: {p.label()}",
        f"{measured}; {gate_text}{down_text}",
        interval,
        verdict,
        PAPER_TASKS.get(task, "-") if main_metric else "-",
    )


def claims(
    variants: Sequence[dict],
    results: Sequence[dict] | None = None,
    mode: str | None = None,
    difference: Difference | None = None,
) -> list[Claim]:
    """Every claim the records can test, in the paper's order (claims 1, 2, 3, 4)."""
    rows = pretrain_claims(variants)
    if results and mode:
        rows += finetune_claims(variants, results, mode, difference)
    return sorted(rows, key=lambda c: c.number)


def claims_apply(variants: Sequence[dict]) -> bool:
    """Whether the claims apply: two or more model sizes were pre-trained."""
    return len(sizes_by_params(variants)) >= 2


def claims_markdown(
    rows: Sequence[Claim], variants: Sequence[dict], mode: str | None = None
) -> str:
    """The arms, then the claims table (a claim's text and the paper's figure on its first row
    only), the seeds' measured spread and how to read it; `mode`: the prediction mode claim 2
    reads."""
    lines = [
        arms_markdown(variants),
        "",
        "| # | Paper's claim | In the paper | Compared here | Measured | Interval | Verdict |",
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
    sd, df = seed_sd(arms(variants))
    spread = (
        f"the seeds' standard deviation of the validation loss is {sd:.4f} nats, pooled over the "
        f"arms with two or more seeds ({df} degrees of freedom)"
        if sd is not None
        else "no arm has two pre-training seeds, so no loss difference is decided"
    )
    notes = [
        "",
        f"Validation losses: nats per token, the mean over an arm's pre-training seeds; {spread}. "
        f"A loss difference beyond {Z:g} standard errors is decided. Claims 1 and 2 are decided "
        "only where the larger size's dense arm beats the smaller dense arm beyond that noise "
        "(the precondition: otherwise capacity does not pay at this budget, and the verdict says "
        "so). Fine-tuning: test metric in %, the mean over seeds at the (batch, lr) chosen on dev"
        + (f" ({MODE_NAMES.get(mode, mode)})" if mode else "")
        + "; the interval is a hierarchical percentile bootstrap (95%) of the difference (claimed "
        "better minus claimed worse; above 0 holds, below 0 does not hold, across 0 cannot "
        "decide) that resamples test documents, pre-training seeds and fine-tuning seeds, as its "
        f"cell says. Equal active non-embedding parameters: within {EQUAL_ACTIVE:.0%}; the "
        f"iso-FLOPs variant pairs FLOPs within {FLOPS_BAND[0]}-{FLOPS_BAND[1]}x instead.",
    ]
    return "\n".join(lines + notes + caveats(variants))


def arms_markdown(variants: Sequence[dict]) -> str:
    """One row an arm: its size, sparsity, active non-embedding parameters, training FLOPs
    against the smallest dense arm, and its validation loss per seed and their mean."""
    all_arms = arms(variants)
    dense = [a for a in all_arms if a.sparsity == 0 and a.iso_flops_of is None]
    base = min(dense, key=lambda a: a.size).train_flops if dense else None
    lines = [
        "| Arm | Size | Sparsity | Active non-emb. | FLOPs" + (" (x smallest dense)" if base else "")
        + " | Val loss per seed | Mean |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for a in all_arms:
        flops = f"{a.train_flops / base:.2f}" if base else f"{a.train_flops:.3e}"
        per_seed = ", ".join(f"{x:.3f} (seed {s})" for x, s in zip(a.losses, a.seeds, strict=True))
        lines.append(
            f"| {a.name} | {a.model} | {a.sparsity:.0%} | {a.active:,} | {flops} | {per_seed} | "
            f"{a.loss:.3f} |"
        )
    return "\n".join(lines)


def caveats(variants: Sequence[dict]) -> list[str]:
    """What the comparison cannot show, from what was trained: the regime (tokens per active
    parameter against the paper's ~347) and a 1-layer arm (no induction heads)."""
    out = []
    ratios = [v["tokens"] / v["active_non_embedding_params"] for v in variants if v.get("tokens")]
    if ratios:
        out.append(
            f"Regime: {min(ratios):.0f}-{max(ratios):.0f} training tokens per active "
            "non-embedding parameter (the paper: ~347), so these verdicts speak for this budget."
        )
    shallow = sorted({v["model"] for v in variants if v["model"] in SIZES
                      and SIZES[v["model"]].n_layer == 1})  # fmt: skip
    if shallow:
        out.append(
            f"A 1-layer model ({', '.join(shallow)}) forms no induction heads: it differs from "
            "the deeper arms in kind as well as in capacity."
        )
    return ["", "Caveats. " + " ".join(out)] if out else []
