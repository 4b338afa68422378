"""An evaluated unit's scores: its predictions on dev and test in every prediction mode, the
task's metrics of them, and the flags of degenerate ones (`point.predict_point` fills them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mediswift.finetune.formats import label_to_json
from mediswift.finetune.results import PointManifest
from mediswift.finetune.scoring import Encoded
from mediswift.finetune.stats import degenerate


@dataclass
class Scores:
    """An evaluated unit's scores on dev and test in every prediction mode (`predict_point`)."""

    metrics: dict[str, float] = field(default_factory=dict)
    unparsed: dict[str, int] = field(default_factory=dict)  # split -> generations naming no label
    flags: dict[str, str] = field(default_factory=dict)  # <split>_<mode> -> why degenerate
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # mode -> predictions

    def manifest(self, described: dict[str, Any], modes: list[str]) -> PointManifest:
        return PointManifest(
            **described,
            metrics=self.metrics,
            unparsed_generations=self.unparsed,
            degenerate=self.flags,
            checkpoint="checkpoint",
            predictions={m: predictions_file(m) for m in modes},
        )


def predictions_file(mode: str) -> str:
    return f"predictions_{mode}.jsonl"


def score_split(
    out: Scores,
    task: Any,
    examples: list[Encoded],
    split: str,
    mode: str,
    preds: list[Any],
    texts: list[str],
) -> None:
    """Add one split's predictions in one mode to `out`: metrics, flags and rows."""
    golds = [e.label for e in examples]
    out.metrics[f"{split}_{mode}"] = task.metric(preds, golds)
    out.metrics |= {f"{split}_{mode}_{k}": v for k, v in task.scores(preds, golds).items()}
    if mode == "generate":
        out.unparsed[split] = preds.count(None)
    if why := degenerate(preds):
        out.flags[f"{split}_{mode}"] = why
    out.rows.setdefault(mode, []).extend(
        {
            "id": e.id,
            "split": split,
            "gold": label_to_json(e.label),
            "pred": label_to_json(p),
            **({"text": t} if texts else {}),
        }
        for e, p, t in zip(examples, preds, texts or [""] * len(preds), strict=True)
    )
