"""Publishes the report: files under MEDISWIFT_HOME, a Prefect artifact and an MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from mediswift.config import PipelineConfig
from mediswift.report import write_report
from tasks.tracking import log_report


def publish_report(
    cfg: PipelineConfig, home: Path, arts: dict[str, Any], log_to_mlflow: bool = True
) -> Path | None:
    """Refresh the report from the manifests; log it to MLflow when something new ran."""
    if not arts["filter"].done():
        return None
    html_path = write_report(cfg, home, arts)
    md = (html_path.parent / "report.md").read_text()
    create_markdown_artifact(key="mediswift-report", markdown=md, description=str(html_path))
    if log_to_mlflow and (arts["evaluate"].done() or arts["pretrain"].done()):
        log_report(cfg, home, html_path.parent)
    get_run_logger().info("report: %s", html_path)
    return html_path
