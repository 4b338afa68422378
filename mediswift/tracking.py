"""MLflow logging for the pipeline: the only module that imports mlflow.

Metrics are buffered and sent in batches (one `log_batch` call per flush) so that a training
loop logging every few steps does not pay a round trip per value. Runs are tagged with the
Prefect flow run that produced them when the caller passes its id and URL.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient


def default_tracking_uri(home: Path) -> str:
    """SQLite under the artifact root, as an absolute URI."""
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(home / 'mlflow.db').resolve()}"


class RunLogger:
    """One MLflow run: params once, metrics batched, artifacts as files."""

    def __init__(self, client: MlflowClient, run_id: str, flush_every: int = 200):
        self.client = client
        self.run_id = run_id
        self._buffer: list[Metric] = []
        self._flush_every = flush_every

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if len(self._buffer) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


class Tracker:
    """An experiment in an MLflow tracking store."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = (artifact_root / experiment).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location
            )
        else:
            self.experiment_id = exp.experiment_id

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Iterator[RunLogger]:
        """Start (or reopen, given `run_id`) a run; it ends FINISHED, or FAILED on an error."""
        all_tags = {"mlflow.runName": name, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        logger = RunLogger(self.client, run_id)
        if params:
            logger.log_params(params)
        try:
            yield logger
        except BaseException:
            logger.flush()
            self.client.set_terminated(run_id, status="FAILED")
            raise
        logger.flush()
        self.client.set_terminated(run_id, status="FINISHED")

    def run_url(self, run_id: str, ui_base: str | None) -> str | None:
        if not ui_base:
            return None
        return f"{ui_base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resolve_tracking_uri(configured: str | None, home: Path) -> str:
    """The recipe's URI, else MLFLOW_TRACKING_URI, else SQLite under the artifact root."""
    import os

    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(home)


def mlflow_ui_base() -> str | None:
    """Where a person opens the MLflow UI (set by `make serve`), for links from Prefect."""
    import os

    return os.environ.get("MEDISWIFT_MLFLOW_UI")


def log_report_run(
    tracking_uri: str, experiment: str, home: Path, folder: Path, tags: dict[str, Any]
) -> str:
    """Log the report folder (HTML, Markdown, figures) as one run; returns its id."""
    tracker = Tracker(tracking_uri, experiment, artifact_root=home / "mlruns")
    with tracker.run("pipeline-report", tags={"mediswift.kind": "report", **tags}) as run:
        for path in sorted(folder.iterdir()):
            run.log_artifact(path, "report")
    return run.run_id
