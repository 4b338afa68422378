"""Statistics a reviewer trusts: degenerate models flagged, intervals over test examples.

- A grid point is *degenerate* in a prediction mode when, on a split, every parsed prediction
  is the same label, however many generations were unparsed, or no prediction names a label at
  all (a fine-tune that collapsed to a constant answer; early stopping can keep it). An
  unparsed generation (None) is not a second label: 44 x "yes" + 6 unparsed is a constant
  "yes" that happens to print garbage sometimes. `selection_rule` (in `mediswift.finetune.grid.select`)
  never chooses a (batch, lr) with a degenerate seed while one without exists, and the tables
  say how many seeds of the chosen one are degenerate.
- The 95% interval is a percentile bootstrap over test examples of the seed-mean metric: the
  same resampled examples for every seed (so the interval is about the test set, the spread
  over seeds is the ± std beside it), 500 resamples, seeded.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mediswift.finetune.formats import Label, label_from_json

BOOTSTRAP_RESAMPLES = 500
Metric = Callable[[Sequence[Label | None], Sequence[Label]], float]


def degenerate(preds: Sequence[Label | None]) -> str | None:
    """Why these predictions are degenerate ('no label', 'constant'), or None."""
    named = [p for p in preds if p is not None and p != () and p != []]
    if not named:
        return "no label"
    # The empty label (no hallmark, no relation) is a real answer, so it counts among the
    # parsed ones; only unparsed outputs (None) are left out.
    parsed = {json.dumps(p) for p in preds if p is not None}
    if len(preds) > 1 and len(parsed) == 1:
        return "constant"
    return None


def read_predictions(path: Path, split: str) -> tuple[list[str], list[Label | None], list[Label]]:
    """(ids, predictions, golds) of one split from a point's `predictions_<mode>.jsonl`."""
    ids, preds, golds = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["split"] != split:
            continue
        ids.append(row["id"])
        preds.append(None if row["pred"] is None else label_from_json(_tuples(row["pred"])))
        golds.append(label_from_json(_tuples(row["gold"])))
    return ids, preds, golds


def seed_predictions(
    files: Sequence[Path], split: str = "test"
) -> tuple[list[list[Label | None]], list[Label]]:
    """Each seed's predictions on `split` (one `predictions_<mode>.jsonl` a seed, in the order
    given) and the gold labels, which every seed's file shares."""
    per_seed: list[list[Label | None]] = []
    golds: list[Label] = []
    for f in files:
        _, preds, golds = read_predictions(f, split)
        per_seed.append(preds)
    return per_seed, golds


def _tuples(value: Any) -> Any:
    # JSON turns a relation label's inner tuples into lists; labels compare as tuples.
    if isinstance(value, list):
        return [tuple(v) if isinstance(v, list) else v for v in value]
    return value


def bootstrap_interval(
    metric: Metric,
    per_seed_preds: Sequence[Sequence[Label | None]],
    golds: Sequence[Label],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile interval of the seed-mean metric over resampled test examples."""
    n = len(golds)
    if n == 0 or not per_seed_preds:
        return (0.0, 0.0)
    rng = random.Random(seed)
    values = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        g = [golds[i] for i in idx]
        scores = [metric([preds[i] for i in idx], g) for preds in per_seed_preds]
        values.append(sum(scores) / len(scores))
    values.sort()
    lo = values[int(0.025 * (resamples - 1))]
    hi = values[int(round(0.975 * (resamples - 1)))]
    return lo, hi
