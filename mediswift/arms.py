"""Arms and their noise: the variants of a recipe grouped by arm (a size at a sparsity level,
one variant per pre-training seed), the seeds' pooled spread that decides a loss difference, and
the hierarchical bootstrap that carries seed variance into a fine-tuning interval. Read by the
claims (`mediswift.claims`) and the dry run; the fine-tuning comparison reads the test
predictions the finetune stage kept."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediswift.finetune.stats import BOOTSTRAP_RESAMPLES, Metric, read_predictions
from mediswift.names import arm_of

HOLDS = "holds here"
FAILS = "does not hold here"
UNDECIDED = "this scale cannot decide"
# Standard errors beyond which a loss difference is decided (about a 95% two-sided test).
Z = 2.0
Interval = tuple[float, float]


@dataclass(frozen=True)
class Arm:
    """A size at one sparsity level (or an iso-FLOPs baseline): its variants, one per seed."""

    name: str
    model: str
    sparsity: float
    iso_flops_of: float | None
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    losses: tuple[float, ...]
    train_flops: float
    active: int  # active non-embedding parameters
    size: float  # the size's dense non-embedding parameters: what "larger" means

    @property
    def loss(self) -> float:
        return sum(self.losses) / len(self.losses)

    def seeds_text(self) -> str:
        return f"seed {self.seeds[0]}" if len(self.seeds) == 1 else f"seeds {list(self.seeds)}"


def arms(variants: Sequence[dict]) -> list[Arm]:
    """The variants grouped by arm (`arm`, else the name without a seed), in record order."""
    groups: dict[str, list[dict]] = {}
    for v in variants:
        groups.setdefault(v.get("arm") or arm_of(v["name"]), []).append(v)
    out = []
    for name, vs in groups.items():
        v = vs[0]
        size = v.get("non_embedding_params") or v["active_non_embedding_params"] / max(
            1e-9, 1.0 - v["sparsity"]
        )
        out.append(
            Arm(
                name, v["model"], v["sparsity"], v.get("iso_flops_of"),
                tuple(x["name"] for x in vs), tuple(x.get("seed", 0) for x in vs),
                tuple(x["final_val_loss"] for x in vs),
                sum(x["train_flops"] for x in vs) / len(vs),
                v["active_non_embedding_params"], float(size),
            )
        )  # fmt: skip
    return out


def seed_sd(all_arms: Sequence[Arm]) -> tuple[float | None, int]:
    """The seeds' standard deviation of the validation loss, pooled over every arm with two or
    more seeds, and its degrees of freedom (None, 0 without such an arm)."""
    squares, df = 0.0, 0
    for a in all_arms:
        finite = [x for x in a.losses if math.isfinite(x)]
        if len(finite) < 2:
            continue
        mean = sum(finite) / len(finite)
        squares += sum((x - mean) ** 2 for x in finite)
        df += len(finite) - 1
    return (math.sqrt(squares / df), df) if df else (None, 0)


@dataclass(frozen=True)
class LossDiff:
    """`ahead`: how far the claimed-better arm's mean loss is below the other's (nats)."""

    ahead: float
    se: float | None

    @property
    def verdict(self) -> str:
        return loss_verdict(self.ahead, self.se)

    def interval(self) -> str:
        if self.se is None:
            return "none (one seed per arm: no spread measured)"
        return f"{self.ahead:+.3f} +- {Z * self.se:.3f} ({Z:g} standard errors over seeds)"


def loss_diff(better: Arm, worse: Arm, sd: float | None) -> LossDiff:
    ahead = worse.loss - better.loss
    se = None if sd is None else sd * math.sqrt(1 / len(better.losses) + 1 / len(worse.losses))
    return LossDiff(ahead, se)


def loss_verdict(ahead: float, se: float | None) -> str:
    """`ahead` nats in the claim's direction, `se` its standard error (None: not measured)."""
    if se is None or not math.isfinite(ahead):
        return UNDECIDED
    if ahead > Z * se:
        return HOLDS
    if ahead < -Z * se:
        return FAILS
    return UNDECIDED


# Per pre-training seed (variant), per fine-tuning seed: predictions aligned to the golds.
Runs = list[list[list[Any]]]


def hierarchical_difference_interval(
    metric: Metric,
    better: Runs,
    worse: Runs,
    golds: Sequence[Any],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> Interval:
    """95% percentile interval of mean(better) - mean(worse): each resample draws the test
    documents (shared by both arms), then each arm's pre-training seeds, then within each drawn
    seed its fine-tuning seeds, all with replacement."""
    n = len(golds)
    if n == 0 or not better or not worse or not all(better) or not all(worse):
        raise ValueError("a paired interval needs test examples and predictions of both arms")
    rng = random.Random(seed)

    def mean(runs: Runs, idx: list[int], g: list[Any]) -> float:
        values = []
        for _ in runs:
            fts = runs[rng.randrange(len(runs))]
            for _ in fts:
                p = fts[rng.randrange(len(fts))]
                values.append(metric([p[i] for i in idx], g))
        return sum(values) / len(values)

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
    """Fine-tuning seed -> [(id, prediction, gold)] on test of the (batch, lr) chosen for
    `result` (an evaluated sweep), sorted by id; None when a file is missing."""
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


@dataclass(frozen=True)
class ArmPredictions:
    """One arm's test predictions on one task: per pre-training seed, per fine-tuning seed."""

    runs: Runs
    ids: list[str]
    golds: list[Any]

    def conditions(self) -> str:
        n_ft = sorted({len(r) for r in self.runs})
        return f"{len(self.runs)} pre-training x {'/'.join(map(str, n_ft))} fine-tuning seeds"


def arm_predictions(
    home: Path, finetune: dict[str, Any], results: Sequence[dict], mode: str
) -> ArmPredictions | None:
    """The predictions of an arm's evaluated sweeps (one per pre-training seed), or None when a
    file is missing or the runs do not cover the same test examples."""
    runs, ids, golds = [], None, None
    for r in results:
        chosen = chosen_predictions(home, finetune, r, mode)
        if not chosen:
            return None
        per_ft = []
        for rows in chosen.values():
            if ids is None:
                ids, golds = [x[0] for x in rows], [x[2] for x in rows]
            if [x[0] for x in rows] != ids:
                return None
            per_ft.append([x[1] for x in rows])
        runs.append(per_ft)
    if not runs or ids is None or golds is None:
        return None
    return ArmPredictions(runs, ids, golds)


@dataclass(frozen=True)
class Compared:
    """Two arms on one metric: the interval of the difference and what it resampled, and each
    arm's mean over its runs on every test document."""

    ci: Interval
    what: str
    better: float
    worse: float


# (better arm's results, worse arm's results, mode, metric) -> the comparison, if it can be made
Difference = Callable[[Sequence[dict], Sequence[dict], str, Metric], Compared | None]


def _runs_mean(metric: Metric, runs: Runs, golds: Sequence[Any]) -> float:
    values = [metric(p, list(golds)) for fts in runs for p in fts]
    return sum(values) / len(values)


def metric_difference(home: Path | None, finetune: dict[str, Any] | None) -> Difference:
    """The hierarchical interval of better - worse from the kept test predictions (None where
    they are missing or cover different examples)."""

    def difference(
        better: Sequence[dict], worse: Sequence[dict], mode: str, metric: Metric
    ) -> Compared | None:
        if home is None or finetune is None:
            return None
        a = arm_predictions(home, finetune, better, mode)
        b = arm_predictions(home, finetune, worse, mode)
        if a is None or b is None or a.ids != b.ids:
            return None
        ci = hierarchical_difference_interval(metric, a.runs, b.runs, a.golds)
        one = len(a.runs) == 1 or len(b.runs) == 1
        what = f"{a.conditions()} vs {b.conditions()}, test documents" + (
            "; conditions on one pre-training run" if one else ""
        )
        return Compared(
            ci, what, _runs_mean(metric, a.runs, a.golds), _runs_mean(metric, b.runs, b.golds)
        )

    return difference
