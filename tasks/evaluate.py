"""Evaluate task: one table per downstream task, the metric-vs-FLOPs plot and the results list."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mediswift.finetune.tables import write_report
from mediswift.manifests import EvaluateManifest, FinetuneManifest, PretrainManifest


@task(name="evaluate-report")
def evaluate_report(
    key: str,
    finetune: FinetuneManifest,
    pretrain: PretrainManifest,
    modes: list[str],
    plot_mode: str,
    out_dir: str,
    home: str,
) -> tuple[EvaluateManifest, dict[str, str]]:
    """Select (batch, lr) per sweep on dev, aggregate test over seeds, write tables and plot."""
    return write_report(finetune, pretrain, modes, plot_mode, Path(out_dir), Path(home))
