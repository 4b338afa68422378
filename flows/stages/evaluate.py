"""The evaluate stage's orchestration: the report task, then every sweep's selected point
registered as an MLflow model, then the MLflow run with the tables (what is selected and how:
`mediswift.stages.evaluate`). Both tables are printed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import FinetuneManifest, PretrainManifest
from mediswift.stages import evaluate as S
from tasks import evaluate as t
from tasks.tracking import (
    MODELS_MISSING,
    flow_run_ref,
    flow_run_tags,
    models_available,
    register_models,
)


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    finetune = manifests.read(inputs["finetune"], FinetuneManifest)
    pretrain = manifests.read(inputs["pretrain"], PretrainManifest)
    modes = S.check_modes(cfg, finetune)
    report = t.evaluate_report.submit(
        key=out.key, finetune=finetune, pretrain=pretrain, modes=modes,
        plot_mode=cfg.evaluate.plot_mode, out_dir=str(out.path), home=str(home),
    ).result()  # fmt: skip
    # One line per task on the console: the tables are files of the output and the report.
    print(S.console_summary(cfg, home, report))
    choices = S.select_points(cfg, home, inputs, report)
    if cfg.tracking.log_models and models_available():
        regs = S.registrations(cfg, home, report, choices, log.warning)
        for reg, model in zip(regs, register_models([r.model for r in regs]), strict=True):
            reg.sweep.selected_point.registered_model = model.uri
    elif cfg.tracking.log_models:
        log.warning("evaluate: %s", MODELS_MISSING)
    report.flow_run = flow_run_ref()  # the report links the run that evaluated
    report.mlflow_run_id = t.log_evaluation(cfg, str(home), str(out.path), report, flow_run_tags())
    log.info("evaluate: tables and plot in %s (MLflow run %s)", out.path, report.mlflow_run_id)
    return manifests.write(out, report)
