"""The finetune stage: every pre-trained variant x downstream task x grid point (batch, lr,
seed). One data unit per task, one unit per grid point (keys: `mediswift.finetune.keys`), and
for every (variant, task) sweep one MLflow parent run with a child run per point; the parent
lists every point of the sweep (tags and a linked table), those found done included.
A multi-stage task (PubMedQA with PQA-A/PQA-U) has a grid per stage, planned round by round
after its data is prepared (`schedule`, `mediswift.finetune.schedule`); its stage and labels
units are children of the same parent run. Manifest: `FinetuneManifest`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from mediswift.artifacts import Artifact
from mediswift.config import FinetuneConfig, PipelineConfig
from mediswift.finetune import keys as P
from mediswift.finetune.keys import LabelSpec, StageSpec, TaskDataSpec
from mediswift.finetune.results import StageUnitManifest, TaskDataManifest
from mediswift.finetune.schedule import Schedule, Unit
from mediswift.manifests import FinetuneManifest, PretrainManifest, TrackingSpec
from mediswift.stage_def import StageDef
from mediswift.tracking import (
    NOTE_TAG,
    RunLogger,
    Tracker,
    portable_tracking_uri,
    resolve_tracking_uri,
)

# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs.
STAGE = StageDef("finetune", inputs=("pretrain", "vocab"), manifest=FinetuneManifest, version=3)


def use_threads(cfg: FinetuneConfig) -> int:
    """Torch threads per worker: the setting, or the cores shared among the workers (torch
    releases the GIL in its kernels, so the points of a thread pool run side by side)."""
    threads = cfg.torch_threads or max(1, (os.cpu_count() or 1) // cfg.concurrency)
    torch.set_num_threads(threads)
    return threads


def tracking_spec(uri: str, home: Path, experiment: str, tags: dict[str, str]) -> TrackingSpec:
    # unit specs are files in the home: a store inside it is named relative to it
    return TrackingSpec(uri=portable_tracking_uri(uri, home), experiment=experiment, tags=tags)


def sweeps(
    cfg: FinetuneConfig,
    home: Path,
    pretrain: PretrainManifest,
    files: dict[str, dict[str, str]],
    vocab: Artifact,
    tracking: TrackingSpec,
) -> tuple[dict[str, tuple[TaskDataSpec, Artifact]], list[P.SweepUnits]]:
    """Every task's data unit and every (variant, task) sweep with its points."""
    data = {name: P.data_spec(cfg, home, name, f, vocab) for name, f in files.items()}
    return data, P.sweep_units(cfg, home, pretrain.variants, data, vocab, tracking)


def parent_run(tracker: Tracker, plan: P.SweepUnits, tags: dict[str, str]) -> str:
    """The sweep's parent run: the one an earlier attempt at this very sweep created, or new."""
    earlier = tracker.find_run(f"tags.`mediswift.sweep` = '{plan.key}'")
    with tracker.run(
        f"{plan.variant.name}-{plan.task}",
        params=None if earlier else plan.params,  # params are logged once, when created
        tags={"mediswift.kind": "finetune-sweep", "mediswift.sweep": plan.key, **tags},
        run_id=earlier,
    ) as parent:
        pass
    return parent.run_id


def write_specs(
    data: dict[str, tuple[TaskDataSpec, Artifact]],
    plans: list[P.SweepUnits],
    tracking: TrackingSpec,
    parents: dict[str, str],
) -> None:
    """Every unit's spec into its directory (each point logs under its sweep's parent)."""
    for spec, unit in data.values():
        P.write_spec(unit, spec)
    for plan in plans:
        if plan.staged:
            continue  # its units are planned stage by stage (`Schedule`), specs written then
        logs = tracking.model_copy(update={"parent_run_id": parents[plan.key]})
        for spec, unit in plan.points:
            P.write_spec(unit, spec.model_copy(update={"tracking": logs}))


def list_points(
    tracker: Tracker,
    parent_id: str,
    plan: P.SweepUnits,
    results: Mapping[str, StageUnitManifest],
) -> None:
    """Tag the sweep's parent run with every one of its points, and describe them in a table
    with links: points found done (trained under an earlier parent, for another sweep key) are
    listed as much as those trained now, so the parent shows the whole sweep."""
    rows = ["| point | dev | test | run |", "|---|---|---|---|"]
    tags = {"mediswift.points": str(len(plan.points))}
    for spec, _ in plan.points:
        r = results[spec.key]
        point = f"b{spec.batch_size}-lr{spec.lr:g}-s{spec.seed}"
        run_id = r.mlflow_run_id
        tags[f"mediswift.point.{point}"] = run_id or spec.key
        metrics = r.metrics
        dev = ", ".join(f"{k[4:]} {v:.4f}" for k, v in metrics.items() if k.startswith("dev_"))
        test = ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items() if k.startswith("test_"))
        link = f"[{run_id[:8]}]({tracker.run_link(run_id)})" if run_id else spec.key
        rows.append(f"| {point} | {dev} | {test} | {link} |")
    tags[NOTE_TAG] = f"Grid points of {plan.variant.name} on {plan.task}:\n\n" + "\n".join(rows)
    RunLogger(tracker.client, parent_id).set_tags(tags)


def one_stage_points(plans: list[P.SweepUnits]) -> dict[str, str]:
    """Unit key -> display name of every point of the one-stage sweeps (run with the data)."""
    return {spec.key: spec.name for plan in plans if not plan.staged for spec, _ in plan.points}


def schedule(sweeps: Sweeps, data_results: list[TaskDataManifest]) -> Schedule:
    """The stage-by-stage plan of the multi-stage sweeps (none: nothing to hand out)."""
    schedules = {task: r.stages for task, r in zip(sweeps.data, data_results, strict=True)}
    s = sweeps
    return Schedule(s.home, s.plans, s.data, schedules, s.tracking, s.parents)


def round_units(units: list[Unit]) -> tuple[dict[str, str], dict[str, str]]:
    """Write the specs of one round of stage units; (stage units, labels units) as key ->
    display name."""
    for spec, unit in units:
        P.write_spec(unit, spec)
    stages = {s.key: s.name for s, _ in units if isinstance(s, StageSpec)}
    labels = {s.key: s.name for s, _ in units if isinstance(s, LabelSpec)}
    return stages, labels


def collect(
    sweeps: Sweeps,
    data_results: list[TaskDataManifest],
    results: Mapping[str, StageUnitManifest],
    threads: int,
) -> FinetuneManifest:
    """List every sweep's points on its parent run; the stage manifest. `results`: unit key ->
    manifest of every point (a multi-stage sweep's points are its last stage's units)."""
    for plan in sweeps.plans:
        list_points(sweeps.tracker, sweeps.parents[plan.key], plan, results)
    by_task = dict(zip(sweeps.data, data_results, strict=True))
    return P.manifest(
        sweeps.home, sweeps.data, by_task, sweeps.plans, sweeps.parents, results, threads
    )


@dataclass(frozen=True)
class Sweeps:
    """Every task's data unit and every (variant, task) sweep, each with its MLflow parent run;
    the specs of their units are written (a multi-stage sweep's: round by round)."""

    home: Path
    tracker: Tracker
    tracking: TrackingSpec
    data: dict[str, tuple[TaskDataSpec, Artifact]]
    plans: list[P.SweepUnits]
    parents: dict[str, str]  # sweep key -> parent run id


def open_sweeps(
    cfg: PipelineConfig,
    home: Path,
    pretrain: PretrainManifest,
    files: dict[str, dict[str, str]],
    vocab: Artifact,
    tags: dict[str, str],
) -> Sweeps:
    """Plan the sweeps, open (or find) each one's parent run and write the units' specs."""
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    experiment = cfg.tracking.finetune_experiment
    tracker = Tracker(uri, experiment, artifact_root=home / "mlruns")
    tracking = tracking_spec(uri, home, experiment, tags)
    data, plans = sweeps(cfg.finetune, home, pretrain, files, vocab, tracking)
    parents = {plan.key: parent_run(tracker, plan, tags) for plan in plans}
    write_specs(data, plans, tracking, parents)
    return Sweeps(home, tracker, tracking, data, plans, parents)
