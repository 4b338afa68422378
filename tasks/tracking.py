"""Links between Prefect and MLflow: run tags pointing at the flow run, link artifacts back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL

from mediswift.config import PipelineConfig
from mediswift.tracking import log_report_run, mlflow_ui_base, resolve_tracking_uri


def flow_run_tags() -> dict[str, str]:
    """MLflow tags naming the Prefect flow run (and its UI page when a server is known)."""
    run_id = flow_run.get_id()
    if not run_id:
        return {}
    tags = {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": str(flow_run.get_name())}
    ui = PREFECT_UI_URL.value()
    if ui:
        tags["prefect.flow_run_url"] = f"{ui.rstrip('/')}/runs/flow-run/{run_id}"
    return tags


def link_mlflow_run(run_id: str, experiment_id: str, tracking_uri: str, label: str) -> None:
    """A Prefect link artifact pointing at an MLflow run (its UI page, or its store URI)."""
    ui = mlflow_ui_base()
    link = (
        f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        if ui
        else f"{tracking_uri}#runs/{run_id}"
    )
    create_link_artifact(link=link, link_text=f"MLflow run: {label}", description=label)


def log_report(cfg: PipelineConfig, home: Path, folder: Path) -> str:
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    return log_report_run(uri, cfg.tracking.finetune_experiment, home, folder, flow_run_tags())


def tracking_settings(cfg: PipelineConfig, home: Path) -> dict[str, Any]:
    """What a task needs to log to MLflow, as plain values for the library."""
    return {
        "tracking_uri": resolve_tracking_uri(cfg.tracking.tracking_uri, home),
        "tags": flow_run_tags(),
    }
