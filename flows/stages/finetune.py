"""The finetune stage: every pre-trained variant x downstream task x grid point (batch, lr, seed).

Plan units, submit, collect, write the manifest: fetch each task's raw files, prepare its data
(one unit per task), then run every grid point in a thread pool of `finetune.concurrency`
workers (torch releases the GIL in its kernels; each worker gets cores / concurrency torch
threads). A multi-stage task's units (a grid per stage) then run round by round, as the
library's schedule hands them out once the stage before is chosen, one subflow run per round
(`mediswift.finetune.schedule`). Keys come from `mediswift.finetune.keys`. MLflow: one parent
run per (variant, task) sweep, a child run per grid point (and stage unit); the parent lists
every point of the sweep (tags and a linked table), those found done included. Manifest:
`mediswift.manifests.FinetuneManifest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from mediswift import manifests
from mediswift.artifacts import Artifact, unit_at
from mediswift.config import PipelineConfig
from mediswift.finetune.results import StageUnitManifest, TaskDataManifest, TrainedUnit
from mediswift.finetune.schedule import Schedule
from mediswift.manifests import PretrainManifest
from mediswift.stages import finetune as S
from tasks import finetune as t
from tasks.common import cached
from tasks.progress import wait_with_progress
from tasks.tracking import flow_run_tags, link_mlflow_run


@flow(name="finetune-sweep")
def finetune_sweep(
    home: str, data: dict[str, str], points: dict[str, str], labels: dict[str, str] | None = None
) -> tuple[list[TaskDataManifest], list[TrainedUnit]]:
    """Prepare every task's data, then run every grid point (in the flow's thread pool); in a
    later round of a multi-stage schedule, its labels units first, then its stage units.

    `data`, `points` and `labels` map unit keys to display names: each unit's spec is in its
    directory (`spec.json`), so the subflow's parameters stay small."""
    root = Path(home)

    def submit(task: Any, key: str, name: str) -> Any:
        unit = unit_at(root, "finetune", key)
        return cached(task, root, unit).submit(key=key, home=home, name=name)

    data_results = [f.result() for f in [submit(t.prepare_data, k, n) for k, n in data.items()]]
    for f in [submit(t.finetune_labels, k, n) for k, n in (labels or {}).items()]:
        f.result()
    return data_results, _run_points(root, points, submit)


def _run_points(root: Path, points: dict[str, str], submit: Any) -> list[TrainedUnit]:
    """Every point's result in `points` order, logging progress while they run. Points done
    before they are submitted (their tasks return at once) count as done from the start,
    outside the rate."""
    already = {k for k in points if unit_at(root, "finetune", k).done()}
    futures = {k: submit(t.finetune_point, k, n) for k, n in points.items()}
    running = [f for k, f in futures.items() if k not in already]
    wait_with_progress("finetune", running, already=len(already))
    return [f.result() for f in futures.values()]


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    fc = cfg.finetune
    pretrain = manifests.read(inputs["pretrain"], PretrainManifest)
    threads = S.use_threads(fc)
    fetched = {name: t.fetch_files.submit(cfg, name, str(home)) for name in fc.tasks}
    files = {name: f.result().files for name, f in fetched.items()}
    sweeps = S.open_sweeps(cfg, home, pretrain, files, inputs["vocab"], flow_run_tags())
    for plan in sweeps.plans:
        name = f"{plan.variant.name}-{plan.task} sweep"
        uri = sweeps.tracker.tracking_uri
        link_mlflow_run(sweeps.parents[plan.key], sweeps.tracker.experiment_id, uri, name)
    points = S.one_stage_points(sweeps.plans)
    get_run_logger().info(
        "finetune: %d variants x %s, %d grid points, %d workers x %d torch threads",
        len(pretrain.variants), list(fc.tasks), len(points), fc.concurrency, threads,
    )  # fmt: skip
    runner = ThreadPoolTaskRunner(max_workers=fc.concurrency)
    sweep = finetune_sweep.with_options(task_runner=runner)
    data_results, results = sweep(
        home=str(home), data={s.key: s.task for s, _ in sweeps.data.values()}, points=points
    )
    by_key = dict(zip(points, results, strict=True))
    schedule = S.schedule(sweeps, data_results)
    by_key |= _stage_rounds(sweep, schedule, home)
    return manifests.write(out, S.collect(sweeps, data_results, by_key, threads))


def _stage_rounds(sweep: Any, schedule: Schedule, home: Path) -> dict[str, StageUnitManifest]:
    """Multi-stage sweeps: a grid per stage, one subflow run per round of the units whose
    inputs are chosen (none for one-stage tasks). Returns every stage unit's manifest by key."""
    while units := schedule.next_units():
        stage_units, labels = S.round_units(units)
        get_run_logger().info(
            "finetune: a round of %d stage and %d labels units", len(stage_units), len(labels)
        )
        _, done = sweep(home=str(home), data={}, points=stage_units, labels=labels)
        schedule.record_round(dict(zip(stage_units, done, strict=True)), labels)
    return schedule.trained()
