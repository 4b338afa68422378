"""Evaluate task: one table per downstream task, the metric-vs-FLOPs plot and the results list."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mediswift.config import PipelineConfig
from mediswift.finetune.tables import write_report
from mediswift.manifests import (
    EvaluateManifest,
    FinetuneManifest,
    PretrainManifest,
)
from mediswift.stages.evaluate import log_to_mlflow


@task(name="evaluate-report")
def evaluate_report(
    key: str,
    finetune: FinetuneManifest,
    pretrain: PretrainManifest,
    modes: list[str],
    plot_mode: str,
    out_dir: str,
    home: str,
) -> EvaluateManifest:
    """Select (batch, lr) per sweep on dev, aggregate test over seeds, write tables and plot."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    manifest, _ = write_report(finetune, pretrain, modes, plot_mode, Path(out_dir), Path(home))
    return manifest


@task(name="evaluate-log")
def log_evaluation(
    cfg: PipelineConfig, home: str, out_dir: str, report: EvaluateManifest, tags: dict[str, str]
) -> str:
    """The selected numbers on each sweep's parent run and the evaluate run with the tables;
    the evaluate run's id."""
    return log_to_mlflow(cfg, Path(home), Path(out_dir), report, tags)
