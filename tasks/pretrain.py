"""Pre-training task: one model variant (size x sparsity x method), with its MLflow run.

Cached on the variant's unit key (token manifest + pretrain settings + this sparsity). Retried
once: a retry finds the variant's last checkpoint and resumes from it, logging into the same
MLflow run (its id is kept in the variant directory). The run records the token and document
shards it consumed as its dataset inputs when it is created.

The record it returns names the checkpoint and loss curve relative to the home: it is kept as
the task's cache record in the home, which must stay valid when the home is copied or moved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from mediswift.artifacts import manifest_done, write_atomic
from mediswift.manifests import VariantRun
from mediswift.sections import PretrainConfig, TrackingConfig
from mediswift.tracking import DatasetRef, RunLogger, Tracker, resolve_tracking_uri
from mediswift.train.pretrain import VARIANT_MANIFEST, VariantSpec, launch_variant, variant_params
from tasks.progress import progress_reporter

PATH_FIELDS = ("checkpoint", "loss_curve")


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


def in_unit(path: str, unit: Path) -> Path:
    """`path`, a file of the variant directory `unit`, as it is under `unit` now: a record
    written before the home moved names the unit's old place (the unit key is the anchor)."""
    p = Path(path)
    if unit.name in p.parts:
        last = len(p.parts) - 1 - p.parts[::-1].index(unit.name)
        return unit.joinpath(*p.parts[last + 1 :])
    return unit / p


def home_relative(record: dict[str, Any], unit: Path, home: Path) -> dict[str, Any]:
    """The record with its paths relative to the home."""
    rel = {k: str(in_unit(record[k], unit).relative_to(home)) for k in PATH_FIELDS if k in record}
    return {**record, **rel}


@task(name="pretrain-variant", task_run_name="pretrain-{spec.name}", retries=1)
def pretrain_variant(
    key: str,
    spec: VariantSpec,
    pretrain: PretrainConfig,
    tracking: TrackingConfig,
    home: str,
    tags: dict[str, str],
    datasets: list[dict[str, Any]] | None = None,
) -> VariantRun:
    """Train (or resume) the variant `spec`; returns its record, paths relative to `home`.
    `pretrain`: how to run it (processes, nodes, rendezvous). `datasets`: `DatasetRef` fields
    of what it trains on. With `nnodes` > 1 this runs its own node's part (c10d rendezvous at
    `rdzv_endpoint`, id `rdzv_id` or the unit key) and logs the command each other node runs."""
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    id_file = out / "mlflow_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    done = manifest_done(out / VARIANT_MANIFEST)
    uri = resolve_tracking_uri(tracking.tracking_uri, Path(home))
    tracker = Tracker(uri, tracking.pretrain_experiment, artifact_root=Path(home) / "mlruns")
    params = None if run_id else variant_params(spec)
    with tracker.run(
        spec.name, params=params, tags={**tags, "mediswift.unit": key}, run_id=run_id
    ) as run:
        if run_id is None:
            write_atomic(id_file, run.run_id)
            run.log_datasets([DatasetRef(**d) for d in datasets or []])
        record = launch_variant(
            spec,
            pretrain.nproc,
            sink=ProgressSink(run, spec.name, spec.cfg.steps),
            nnodes=pretrain.nnodes,
            rdzv_endpoint=pretrain.rdzv_endpoint,
            rdzv_id=pretrain.rdzv_id or key,
        )
        if not done:
            run.log_artifact(in_unit(record["loss_curve"], out))
            run.log_artifact(out / "metrics.jsonl")
    record = home_relative(record, out.resolve(), Path(home).resolve())
    return VariantRun.model_validate(
        {**record, "mlflow_run_id": run.run_id, "experiment_id": tracker.experiment_id}
    )
