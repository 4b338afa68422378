"""Fine-tuning tasks: prepare one task's data; fine-tune and evaluate one grid point.

Both are content-addressed units under `<home>/finetune/units/<key>`: the cache key is the unit's
content key (checkpoint, task data, hyperparameters, seed, the settings that change the result),
and the library returns a finished unit as it is, so a finished grid point is never re-trained.
Each grid point is one child MLflow run under its sweep's parent run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from mediswift.artifacts import Artifact
from mediswift.config import FinetuneConfig
from mediswift.finetune.datasets import prepare_task
from mediswift.finetune.point import run_point
from mediswift.text.tokenizer import Tokenizer
from mediswift.tracking import Tracker


def _unit(home: str, key: str) -> Artifact:
    return Artifact("finetune", key, Path(home) / "finetune" / "units" / key)


@task(name="finetune-data", task_run_name="data-{task_name}")
def prepare_data(
    key: str,
    home: str,
    task_name: str,
    raw: dict[str, str],
    extra: dict[str, str],
    cfg: dict[str, Any],
    tokenizer_dir: str,
) -> dict[str, Any]:
    """The task's official splits as JSONL (+ data.json, token ids) in the unit `key`."""
    unit = _unit(home, key)
    if unit.done():
        return unit.manifest()
    info = prepare_task(
        task_name,
        {k: Path(v) for k, v in raw.items()},
        FinetuneConfig.model_validate(cfg),
        unit.ensure().path,
        {k: Path(v) for k, v in extra.items()},
        Tokenizer.load(tokenizer_dir),
    )
    return unit.write_manifest({**info, "path": str(unit.path)})


@task(name="finetune-point", task_run_name="{variant}-{task_name}-b{batch_size}-lr{lr}-s{seed}")
def finetune_point(
    key: str,
    home: str,
    variant: str,
    task_name: str,
    checkpoint: str,
    data_dir: str,
    tokenizer_dir: str,
    cfg: dict[str, Any],
    batch_size: int,
    lr: float,
    seed: int,
    modes: list[str],
    tracking: dict[str, Any],
) -> dict[str, Any]:
    """Fine-tune `variant` on `task_name` at one (batch, lr, seed); one child MLflow run."""
    unit = _unit(home, key)
    if unit.done():
        return unit.manifest()
    fcfg = FinetuneConfig.model_validate(cfg)
    tracker = Tracker(tracking["uri"], tracking["experiment"], artifact_root=Path(home) / "mlruns")
    params = {
        "variant": variant,
        "task": task_name,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "unit": key,
        **{k: v for k, v in cfg.items() if k not in ("pubmedqa_grid", "hoc_grid", "seeds")},
    }
    name = f"{variant}-{task_name}-b{batch_size}-lr{lr:g}-s{seed}"
    with tracker.run(
        name,
        params=params,
        tags={"mediswift.kind": "finetune-point", **tracking.get("tags", {})},
        parent_run_id=tracking.get("parent_run_id"),
    ) as run:
        manifest = run_point(
            unit,
            Path(checkpoint),
            Path(data_dir),
            Tokenizer.load(tokenizer_dir),
            fcfg,
            task_name,
            batch_size,
            lr,
            seed,
            modes=modes,
            log=run.log_metrics,
            describe={"variant": variant, "mlflow_run_id": run.run_id},
        )
        run.log_artifact(unit.path / "metrics.json")
    return manifest
