"""The grid search of Appendices A.2-A.3: batch size x learning rate x seeds, and the selection.

Every (batch, lr) is trained with every seed; the chosen (batch, lr) is the one with the best
mean dev metric over seeds, and what is reported is the test metric's mean and (sample) standard
deviation over the seeds of that choice. Selection is done per prediction mode, on that mode's
dev metric, so each mode's test number is chosen without looking at test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mediswift.finetune.metrics import mean_std
from mediswift.sections import Grid


@dataclass(frozen=True)
class GridPoint:
    batch_size: int
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return f"b{self.batch_size}-lr{self.lr:g}-s{self.seed}"


def grid_points(grid: Grid, seeds: Sequence[int]) -> list[GridPoint]:
    return [
        GridPoint(b, lr, s) for b in grid.batch_sizes for lr in grid.learning_rates for s in seeds
    ]


def _by_point(points: Sequence[dict[str, Any]], what: str) -> dict[tuple[int, float], list]:
    """Grid-point results grouped by (batch_size, lr), in grid order."""
    groups: dict[tuple[int, float], list[dict[str, Any]]] = {}
    for p in points:
        groups.setdefault((p["batch_size"], p["lr"]), []).append(p)
    if not groups:
        raise ValueError(f"no grid points to {what} from")
    return groups


def _best(table: list[dict[str, Any]], candidates: Sequence[int]) -> int:
    """The candidate row with the best dev mean; ties go to the first in grid order."""
    return max(candidates, key=lambda i: (table[i]["dev_mean"], -i))


def select(points: Sequence[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Best (batch, lr) by mean dev metric of `mode` over seeds, with test mean/std there.

    `points` are grid-point results: batch_size, lr, seed, metrics {"dev_<mode>",
    "test_<mode>"} and optionally degenerate {"<split>_<mode>": why}. A (batch, lr) with a seed
    whose dev predictions are degenerate (constant, or no label) is never chosen while one
    without exists. Ties go to the first (batch, lr) in grid order.
    """
    groups = _by_point(points, "select")
    table = []
    for (batch, lr), members in groups.items():
        members = sorted(members, key=lambda p: p["seed"])
        dev = [p["metrics"][f"dev_{mode}"] for p in members]
        test = [p["metrics"][f"test_{mode}"] for p in members]
        flags = [p.get("degenerate") or {} for p in members]
        table.append(
            {
                "batch_size": batch,
                "lr": lr,
                "seeds": [p["seed"] for p in members],
                "dev_per_seed": dev,
                "test_per_seed": test,
                "dev_mean": mean_std(dev)[0],
                "dev_std": mean_std(dev)[1],
                "test_mean": mean_std(test)[0],
                "test_std": mean_std(test)[1],
                "degenerate_seeds": sum(
                    any(f"{split}_{mode}" in f for split in ("dev", "test")) for f in flags
                ),
                "dev_degenerate": any(f"dev_{mode}" in f for f in flags),
            }
        )
    clean = [i for i, row in enumerate(table) if not row["dev_degenerate"]]
    candidates = clean or list(range(len(table)))
    best = _best(table, candidates)
    return {
        **table[best],
        "mode": mode,
        "grid": table,
        "avoided_degenerate": sum(
            1 for i, row in enumerate(table) if row["dev_degenerate"] and clean and i != best
        ),
    }


def choose(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The (batch, lr) of an earlier stage of a multi-stage schedule: the best mean over seeds
    of `dev` (each point's best dev metric of that stage); ties go to the first (batch, lr) in
    grid order. `points`: batch_size, lr, seed, dev and optionally degenerate {"dev_<mode>":
    why}. As `select` does for the last stage, a (batch, lr) with a seed whose dev predictions
    are degenerate is never chosen while one without exists: the stage's model starts the next
    stage (or labels PQA-U), so a constant one would pass its collapse on. Returns batch_size,
    lr, dev_mean, degenerate_seeds (of the choice), avoided_degenerate and the table of every
    (batch, lr)."""
    groups = _by_point(points, "choose")
    table = [
        {
            "batch_size": batch,
            "lr": lr,
            "dev_mean": mean_std([p["dev"] for p in members])[0],
            "seeds": sorted(p["seed"] for p in members),
            "degenerate_seeds": sum(1 for p in members if p.get("degenerate")),
        }
        for (batch, lr), members in groups.items()
    ]
    clean = [i for i, row in enumerate(table) if not row["degenerate_seeds"]]
    best = _best(table, clean or range(len(table)))
    avoided = sum(1 for i, row in enumerate(table) if row["degenerate_seeds"] and clean)
    return {**table[best], "avoided_degenerate": avoided, "grid": table}
