"""Pre-training task: one model variant (size x sparsity x method), with its MLflow run.

Cached on the variant's unit key (token manifest + pretrain settings + this sparsity). Retried
once: a retry finds the variant's last checkpoint and resumes from it, logging into the same
MLflow run (its id is kept in the variant directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from mediswift.artifacts import write_atomic
from mediswift.tracking import RunLogger, Tracker
from mediswift.train.pretrain import RECORD, VariantSpec, launch_variant, variant_params
from tasks.progress import progress_reporter


class ProgressSink:
    """Metrics to MLflow, and the step count to the Prefect progress bar (rate and ETA)."""

    def __init__(self, run: RunLogger, name: str, steps: int):
        self.run = run
        self.report = progress_reporter(f"pretrain {name}", steps, unit="steps", every_s=30)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log_metrics(metrics, step)
        self.report(step)

    def flush(self) -> None:
        self.run.flush()


@task(name="pretrain-variant", task_run_name="pretrain-{name}", retries=1)
def pretrain_variant(
    key: str,
    name: str,
    spec_json: str,
    nproc: int,
    tracking_uri: str,
    experiment: str,
    home: str,
    tags: dict[str, str],
) -> dict[str, Any]:
    """Train (or resume) the variant described by `spec_json`; returns its record."""
    spec = VariantSpec.from_json(spec_json)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    id_file = out / "mlflow_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    done = (out / RECORD).is_file()
    tracker = Tracker(tracking_uri, experiment, artifact_root=Path(home) / "mlruns")
    params = None if run_id else variant_params(spec)
    with tracker.run(
        spec.name, params=params, tags={**tags, "mediswift.unit": key}, run_id=run_id
    ) as run:
        if run_id is None:
            write_atomic(id_file, run.run_id)
        record = launch_variant(spec, nproc, sink=ProgressSink(run, spec.name, spec.cfg.steps))
        if not done:
            run.log_artifact(Path(record["loss_curve"]))
            run.log_artifact(out / "metrics.jsonl")
    return {**record, "mlflow_run_id": run.run_id, "experiment_id": tracker.experiment_id}
