"""Evaluate task: Tables 3/4, the accuracy-vs-FLOPs plot and the results list, as one unit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from mediswift.finetune.tables import write_report


@task(name="evaluate-report")
def evaluate_report(
    key: str,
    finetune: dict[str, Any],
    pretrain: dict[str, Any],
    modes: list[str],
    plot_mode: str,
    out_dir: str,
) -> dict[str, Any]:
    """Select (batch, lr) per sweep on dev, aggregate test over seeds, write tables and plot."""
    return write_report(finetune, pretrain, modes, plot_mode, Path(out_dir))
