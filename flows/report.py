"""Publishes the report: files under MEDISWIFT_HOME, Prefect artifacts and an MLflow run.

The report is always whole: each stage shows the recipe's planned output when done, else the
newest complete output this recipe reached earlier (marked so). It is logged to MLflow only when
something ran and the evaluate output is the current one, so a run of a few stages never files a
partial report. In Prefect, the report is a Markdown artifact with its figures inlined (relative
links cannot render there) and every results table is a table artifact. The report links this
flow run and every MLflow run behind its results.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from mediswift.config import PipelineConfig
from mediswift.report import (
    code_version,
    inlined_markdown,
    record_outputs,
    resolve_outputs,
    write_report,
)
from mediswift.report_links import UiLinks, evaluated_by, ui_links
from mediswift.report_sections import results_tables
from tasks.tracking import flow_run_ref, log_report

REPO = Path(__file__).resolve().parent.parent


def context(cfg: PipelineConfig, fragment: dict[str, Any]) -> dict[str, str]:
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "code version": code_version(REPO),
        "overrides": f"`{fragment}`" if fragment else "none",
        "mirror": cfg.mirror or "none (upstream)",
    }


def links(cfg: PipelineConfig, home: Path, evaluate: Any) -> UiLinks:
    """The report's run links: the flow run that evaluated the results shown (a cached or
    partial run since leaves it), else this one; on the Prefect server it ran on when one was
    known (else the one `prefect server start` opens on its PREFECT_HOME)."""
    ran = evaluated_by(evaluate) or flow_run_ref()
    return ui_links(
        cfg,
        home,
        flow_run_id=ran.id if ran else None,
        flow_run_name=ran.name if ran else None,
        prefect_ui=ran.ui if ran else None,
        prefect_home=ran.prefect_home if ran else None,
    )


def table_artifacts(evaluate: Any) -> None:
    for task, rows in results_tables(evaluate).items():
        key = re.sub(r"[^a-z0-9-]", "-", f"mediswift-table-{task}".lower())
        create_table_artifact(table=rows, key=key, description=f"{task}: results table")


def publish_report(
    cfg: PipelineConfig,
    home: Path,
    arts: dict[str, Any],
    log_to_mlflow: bool = True,
    fragment: dict[str, Any] | None = None,
) -> Path | None:
    """Refresh the report from the manifests; log it to MLflow when something new ran."""
    record_outputs(home, cfg.name, arts)
    shown = resolve_outputs(home, cfg.name, arts)
    if not shown["filter"].done():
        return None
    about = context(cfg, fragment or {})
    html_path = write_report(cfg, home, shown, arts, about, links(cfg, home, shown["evaluate"]))
    md = inlined_markdown(html_path.parent)
    create_markdown_artifact(key="mediswift-report", markdown=md, description=str(html_path))
    table_artifacts(shown["evaluate"])
    if log_to_mlflow and arts["evaluate"].done():
        log_report(cfg, home, html_path.parent)
    get_run_logger().info("report: %s", html_path)
    return html_path
