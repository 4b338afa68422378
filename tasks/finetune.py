"""Fine-tuning tasks: fetch and prepare one downstream task's data; fine-tune one grid point.

Data and points are content-addressed units under `<home>/finetune/units/<key>` (keys from
`mediswift.finetune.keys`); the library returns a finished unit as it is, so a finished grid
point is never re-trained. Each grid point is one child MLflow run under its sweep's parent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task

from mediswift.artifacts import unit_at
from mediswift.config import PipelineConfig
from mediswift.data.download import client_for
from mediswift.finetune.datasets import DATA_FILE, prepare_task
from mediswift.finetune.keys import LabelSpec, PointSpec, StageSpec, TaskDataSpec, read_spec
from mediswift.finetune.point import run_labels, run_point
from mediswift.finetune.results import (
    TRAINED,
    LabelsManifest,
    TaskDataManifest,
    TaskFiles,
    TrainedUnit,
)
from mediswift.finetune.sources import fetch_task_files
from mediswift.text.tokenizer import Tokenizer
from mediswift.tracking import DatasetRef, Tracker, tracking_uri_in
from tasks.download import NETWORK


@task(name="finetune-fetch", task_run_name="fetch-{task_name}", **NETWORK)
def fetch_files(cfg: PipelineConfig, task_name: str, home: str) -> TaskFiles:
    """The task's raw files under <home>/raw (mirrored when the recipe has a mirror)."""
    files = fetch_task_files(
        client_for(cfg.download), cfg.finetune.task(task_name), Path(home), cfg.resolve
    )
    return TaskFiles(files=files)


@task(name="finetune-data", task_run_name="data-{name}")
def prepare_data(key: str, home: str, name: str) -> TaskDataManifest:
    """The task's splits as JSONL (+ data.json, token ids) in the unit `key`."""
    root = Path(home)
    unit = unit_at(root, "finetune", key)
    if unit.done():
        return TaskDataManifest.model_validate(unit.manifest())
    spec = read_spec(unit, TaskDataSpec)
    info = prepare_task(
        spec.task_plugin(),
        {role: root / rel for role, rel in spec.files.items()},
        unit.ensure().path,
        Tokenizer.load(root / spec.tokenizer_dir),
        home=root,
    )
    return TaskDataManifest.model_validate(unit.write_manifest(info))


@task(name="finetune-point", task_run_name="{name}")
def finetune_point(key: str, home: str, name: str) -> TrainedUnit:
    """Fine-tune one variant on one task at one (batch, lr, seed), or one stage of a
    multi-stage schedule there; one child MLflow run."""
    root = Path(home)
    unit = unit_at(root, "finetune", key)
    if unit.done():
        return TRAINED.validate_python(unit.manifest())
    spec = read_spec(unit, PointSpec)
    tr = spec.tracking
    tracker = Tracker(tracking_uri_in(tr.uri, root), tr.experiment, artifact_root=root / "mlruns")
    with tracker.run(
        spec.name,
        params=point_params(spec, key),
        tags={"mediswift.kind": "finetune-point", **tr.tags},
        parent_run_id=tr.parent_run_id,
    ) as run:
        run.log_datasets(task_splits(root, spec))
        tok = Tokenizer.load(root / spec.tokenizer_dir)
        result = run_point(unit, spec, root, tok, log=run.log_metrics, run_id=run.run_id)
        run.log_artifact(unit.path / "metrics.json")
    return result


def point_params(spec: PointSpec, key: str) -> dict[str, Any]:
    """The point's MLflow params: what it is, and the settings it trains with."""
    chain = (
        {"phase": spec.phase, "start": spec.start or "pretrained", "labels": spec.labels}
        if isinstance(spec, StageSpec)
        else {}
    )
    task_settings = spec.task_settings.model_dump(mode="json", exclude={"grid"})
    return {
        "variant": spec.variant,
        "task": spec.task,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "seed": spec.seed,
        "unit": key,
        **chain,
        **spec.shared_settings.model_dump(mode="json"),
        **{f"task.{k}": v for k, v in task_settings.items()},
    }


@task(name="finetune-labels", task_run_name="{name}")
def finetune_labels(key: str, home: str, name: str) -> LabelsManifest:
    """Pseudo-label one split with a chosen stage unit's model (a multi-stage schedule)."""
    root = Path(home)
    unit = unit_at(root, "finetune", key)
    if unit.done():
        return LabelsManifest.model_validate(unit.manifest())
    spec = read_spec(unit, LabelSpec)
    return run_labels(unit, spec, root, Tokenizer.load(root / spec.tokenizer_dir))


def task_splits(home: Path, spec: PointSpec) -> list[DatasetRef]:
    """The task's splits the point trains, selects and is tested on, named by the content key
    of the task's data unit (its folder name); a stage unit's: its stage's (and dev and test
    for the last stage)."""
    data = home / spec.data_dir
    info = json.loads((data / DATA_FILE).read_text())
    stages = info["stages"]
    if isinstance(spec, StageSpec):
        stages = [st for st in stages if st["name"] == spec.phase]
    train = {st["train"] for st in stages}
    dev = {st["dev"] for st in stages}
    read = train | dev
    if not isinstance(spec, StageSpec) or spec.phase == info["stages"][-1]["name"]:
        read |= {"dev", "test"}

    def context(split: str) -> str:
        return "training" if split in train else "validation" if split in dev else "test"

    return [
        DatasetRef(
            name=f"{spec.task}-{split}",
            digest=data.name,
            source=f"{spec.data_dir}/{split}.jsonl",
            context=context(split),
            profile={"examples": n, "before_caps": info["full_counts"].get(split, n)},
        )
        for split, n in info["counts"].items()
        if split in read or not isinstance(spec, StageSpec)
    ]
