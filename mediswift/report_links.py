"""The report's links to the runs behind its results: the Prefect flow run that evaluated them
and every MLflow run, with the UI each opens and the command that reopens its database."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import FlowRunRef
from mediswift.report_sections import _table, task_tables

MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow server` / `mlflow ui` listen by default
PREFECT_UI = "http://127.0.0.1:4200"  # where `prefect server start` listens by default
# The MLflow UI as `make serve` runs it: one worker, no job runner (nothing here submits jobs).
# Run from the repository (where `make install` put `.venv`).
MLFLOW_SERVER = (
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false .venv/bin/mlflow server --host 127.0.0.1 "
    "--port 5000 --workers 1 --backend-store-uri"
)
PREFECT_SERVER = ".venv/bin/prefect server start --host 127.0.0.1 --port 4200"


@dataclass(frozen=True)
class UiLinks:
    """Where the report's run links point, and the command that starts each UI (None: a server
    that is already up). The flow run is the Prefect run that wrote the report."""

    mlflow_ui: str = MLFLOW_UI
    mlflow_command: str | None = None
    prefect_ui: str = PREFECT_UI
    prefect_command: str | None = None
    flow_run_id: str | None = None
    flow_run_name: str | None = None

    def mlflow_run(self, run_id: str) -> str:
        # The UI's direct run route finds the run's experiment itself: the manifests keep run
        # ids, not experiment ids.
        return f"{self.mlflow_ui.rstrip('/')}/#/runs/{run_id}"

    def flow_run(self) -> str | None:
        if not self.flow_run_id:
            return None
        return f"{self.prefect_ui.rstrip('/')}/runs/flow-run/{self.flow_run_id}"


def ui_links(
    cfg: PipelineConfig,
    home: Path,
    flow_run_id: str | None = None,
    flow_run_name: str | None = None,
    prefect_ui: str | None = None,
    prefect_home: str | None = None,
) -> UiLinks:
    """The links of a report written by flow run `flow_run_id`. MLflow: the UI `make serve` set,
    else the tracking server itself, else a local `mlflow server` on the recipe's store.
    Prefect: `prefect_ui` when a server is known, else `prefect server start` on
    `prefect_home`, where a temporary server keeps its runs."""
    from mediswift.tracking import mlflow_ui_base, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    server = uri if uri.startswith(("http://", "https://")) else None
    mlflow_ui = mlflow_ui_base() or server
    # The report is a file of the home, which can move: paths in the home are written as
    # `$MEDISWIFT_HOME/...` (the report says what it is), never as this machine's absolute path.
    uri = in_home(uri, home)
    env = f'PREFECT_HOME="{in_home(prefect_home, home)}" ' if prefect_home else ""
    return UiLinks(
        mlflow_ui=mlflow_ui or MLFLOW_UI,
        mlflow_command=None if mlflow_ui else f'{MLFLOW_SERVER} "{uri}"',
        prefect_ui=prefect_ui or PREFECT_UI,
        # A server's runs stay in its database: the command reopens it when it is not running.
        prefect_command=f"{env}{PREFECT_SERVER}" if prefect_home or not prefect_ui else None,
        flow_run_id=flow_run_id,
        flow_run_name=flow_run_name,
    )


# The home as the shell names it: commands in the report paste as they are (`make` and the
# `mediswift` command set MEDISWIFT_HOME), and the report moves with the home.
HOME_MARK = "$MEDISWIFT_HOME"


def evaluated_by(evaluate: Artifact) -> FlowRunRef | None:
    """The flow run that made the evaluate output (None: not done, or made before it was
    recorded)."""
    if not evaluate.done():
        return None
    ref = evaluate.manifest().get("flow_run")
    return FlowRunRef.model_validate(ref) if ref else None


def in_home(text: str, home: Path) -> str:
    """`text` with the home's absolute path written as `$MEDISWIFT_HOME`."""
    return text.replace(str(Path(home).resolve()), HOME_MARK).replace(str(home), HOME_MARK)


def _opened_by(what: str, base: str, command: str | None) -> str:
    return f"{what} at {base}" + (f" (if it is not running: `{command}`)" if command else "")


def sweep_links(ev: dict[str, Any], variant: str, tasks: list[str], links: UiLinks) -> str:
    """`task: [sweep](..), [chosen point](..)` for each task of `variant` that has runs."""
    by_task = {r["task"]: r for r in ev.get("results", []) if r["variant"] == variant}
    cells = []
    for task in [t for t in tasks if t in by_task]:
        r = by_task[task]
        chosen = (r.get("selected_point") or {}).get("mlflow_run_id")
        runs = [("sweep", r.get("parent_run_id")), ("chosen point", chosen)]
        found = [f"[{label}]({links.mlflow_run(rid)})" for label, rid in runs if rid]
        if found:
            cells.append(f"{task}: " + ", ".join(found))
    return "; ".join(cells) or "-"


def runs_section(arts: dict[str, Artifact], links: UiLinks) -> str:
    """Links to the Prefect flow run and every MLflow run behind the results: a variant's
    pre-training, each fine-tuning sweep (its grid points are its child runs) with its chosen
    point, and the evaluation."""
    # As code: the home mark reads as a shell variable, which it is.
    how = (
        f"`{HOME_MARK}` is the artifact root holding this report (its `report/` folder; "
        "`make demo` uses `.mediswift` in the repository); commands run from the repository. "
        "Run links open "
        + _opened_by("the MLflow UI", links.mlflow_ui, links.mlflow_command)
        + "; the flow-run link opens "
        + _opened_by("the Prefect UI", links.prefect_ui, links.prefect_command)
        + "."
    )
    items = []
    if links.flow_run():
        items.append(f"- Prefect flow run: [{links.flow_run_name}]({links.flow_run()})")
    ev = arts["evaluate"].manifest() if arts["evaluate"].done() else {}
    if ev.get("mlflow_run_id"):
        items.append(
            f"- Evaluation (tables, figures): [run]({links.mlflow_run(ev['mlflow_run_id'])})"
        )
    variants = arts["pretrain"].manifest().get("variants", []) if arts["pretrain"].done() else []
    pretrained = {v["name"]: v.get("mlflow_run_id") for v in variants}
    names = list(dict.fromkeys([*pretrained, *(r["variant"] for r in ev.get("results", []))]))
    tasks = [t for t, _, _ in task_tables(arts["evaluate"])] if ev else []
    rows = [
        [
            name,
            f"[run]({links.mlflow_run(pretrained[name])})" if pretrained.get(name) else "-",
            sweep_links(ev, name, tasks, links),
        ]
        for name in names
    ]
    table = [_table(["Variant", "Pre-training", "Fine-tuning per task"], rows)] if rows else []
    return "\n\n".join([how, *(["\n".join(items)] if items else []), *table])
