"""Which checkpoint `mediswift export` writes out: a pre-trained variant, or the best grid point
of a (variant, task) sweep, found through the stage manifests of a recipe's home.

A fine-tuned point is chosen as the evaluate stage chose: the (batch, lr) with the best mean dev
metric over seeds (in the recipe's plot mode, or greedy generation when the task has no
constrained scoring), then, among its seeds, the one with the best dev metric.

The choice also says how many positions the weights were trained on (`trained_len`, what the
export keeps): a variant's pre-training `seq_len`, a fine-tuned point's own `max_len`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediswift import manifests
from mediswift.artifacts import MANIFEST, Artifact
from mediswift.finetune.grid import select
from mediswift.manifests import FinetuneManifest, PretrainManifest, TrainedVariant
from mediswift.names import model_name


@dataclass
class ExportChoice:
    checkpoint: Path
    prompt: Path | None
    card: dict[str, Any]
    trained_len: int | None = None  # sequence length the weights were trained on (None: unknown)
    # How the point's evaluation generated (its unit manifest's; None: unknown, or pre-trained).
    source_budget: int | None = None
    max_new_tokens: int | None = None


def find_variant(pretrain: PretrainManifest, name: str) -> TrainedVariant:
    for v in pretrain.variants:
        if v.name == name:
            return v
    known = ", ".join(v.name for v in pretrain.variants)
    raise ValueError(f"no pre-trained variant {name!r} in this recipe's home (known: {known})")


def choose(
    home: Path,
    arts: dict[str, Artifact],
    variant: str,
    task: str | None,
    mode: str,
    seq_len: int | None = None,
) -> ExportChoice:
    """The checkpoint, soft prompt and card facts of what to export. `seq_len`: the recipe's
    pre-training sequence length (the trained length of a pre-trained variant)."""
    pretrain = manifests.read(arts["pretrain"], PretrainManifest)
    v = find_variant(pretrain, variant)
    card: dict[str, Any] = {**v.model_dump(), "name": model_name(v.name)}
    if task is None:
        return ExportChoice(home / v.checkpoint, None, card, seq_len)
    finetune = manifests.read(arts["finetune"], FinetuneManifest)
    sweep = next((s for s in finetune.sweeps if s.variant == v.name and s.task == task), None)
    if sweep is None:
        have = sorted({s.task for s in finetune.sweeps})
        raise ValueError(f"no fine-tuning sweep of {v.name} on {task!r} (tasks: {have})")
    points = [p.model_dump() for p in sweep.points]
    if not all(f"dev_{mode}" in p["metrics"] for p in points):
        mode = "generate"
    chosen = select(points, mode)
    members = [
        p for p in sweep.points if (p.batch_size, p.lr) == (chosen["batch_size"], chosen["lr"])
    ]
    best = max(members, key=lambda p: (p.metrics[f"dev_{mode}"], -p.seed))
    unit = home / best.unit
    card |= {
        "name": model_name(v.name, task),
        "task": task,
        "point": {"batch_size": best.batch_size, "lr": best.lr, "seed": best.seed, "mode": mode},
        "metrics": best.metrics,
    }
    return ExportChoice(
        unit / "checkpoint",
        unit / "checkpoint" / "prompt.safetensors",
        card,
        point_max_len(unit),
        **point_generation(unit),
    )


def point_generation(unit: Path) -> dict[str, int]:
    """`source_budget` and `max_new_tokens` of a fine-tuned point (its unit manifest's, those it
    was evaluated with): its export generates the same way."""
    path = unit / MANIFEST
    found = json.loads(path.read_text()) if path.is_file() else {}
    return {k: int(found[k]) for k in ("source_budget", "max_new_tokens") if found.get(k)}


def point_max_len(unit: Path) -> int | None:
    """The context a fine-tuned point was trained on (its unit manifest's `max_len`).

    That, not the pre-training `seq_len`, is the length to export: the exported model is the
    fine-tuned one, and its task inputs (source, soft prompt, answer) were cut to `max_len`. A
    longer `max_len` trained the positions past `seq_len` on the task; a shorter one never showed
    the fine-tuned weights and prompt a longer input.
    """
    path = unit / MANIFEST
    if not path.is_file():
        return None
    max_len = json.loads(path.read_text()).get("max_len")
    return int(max_len) if max_len else None
