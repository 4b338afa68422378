"""The fine-tuning plan: the content key of every task's data and every grid point.

Keys come from the settings' own declaration (`result` fields, see `mediswift.settings`): a
task's data and points hash the shared result settings plus that task's own section, so a
setting of one task never re-keys another, and a scheduling setting (seeds, grid, concurrency)
never re-keys a finished point. The checkpoint path is the variant's content-addressed unit, so
adding a variant to the recipe does not re-key the sweeps of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mediswift.artifacts import Artifact, content_key, file_digest, unit_artifact, write_atomic
from mediswift.finetune.grid import grid_points
from mediswift.finetune.settings import FinetuneConfig
from mediswift.manifests import (
    FinetuneManifest,
    PointResult,
    PointSpec,
    Sweep,
    TaskDataInfo,
    TaskDataSpec,
    TrackingSpec,
    TrainedVariant,
)

S = TypeVar("S", TaskDataSpec, PointSpec)
# Bump when a unit's content or meaning changes (data format, training or evaluation code).
# 3: a task's data is keyed on the task's own settings only (shared settings train, they do
# not prepare data).
UNIT_VERSION = 3
MODES = ("generate", "score")


def task_section(cfg: FinetuneConfig, task: str) -> dict[str, Any]:
    """The finetune section with only `task` in it: all a unit of that task may read."""
    dump = cfg.model_dump(mode="json")
    dump["tasks"] = {task: dump["tasks"][task]}
    return dump


def result_settings(cfg: FinetuneConfig, task: str) -> dict[str, Any]:
    """What can change `task`'s results: shared result settings + the task's own."""
    return {"shared": cfg.result_settings(), "task": cfg.tasks[task].result_settings()}


def modes_for(cfg: FinetuneConfig, task: str) -> list[str]:
    """Every prediction mode the task supports: the finetune output does not depend on the
    evaluate section (not part of this stage's key); evaluate picks the modes it reports."""
    return [m for m in MODES if m in cfg.task(task).modes]


def data_spec(
    cfg: FinetuneConfig, home: Path, task: str, files: dict[str, str], vocab: Artifact
) -> tuple[TaskDataSpec, Artifact]:
    """The data unit of `task`, keyed by its raw files' digests, the task's own settings (the
    shared ones only train) and the tokenizer."""
    digests = {role: file_digest(home / rel) for role, rel in sorted(files.items())}
    tokenizer = vocab.manifest()["hash"]
    unit = unit_artifact(
        home,
        "finetune",
        UNIT_VERSION,
        "data",
        task,
        digests,
        cfg.tasks[task].result_settings(),
        tokenizer,
    )
    spec = TaskDataSpec(
        key=unit.key,
        task=task,
        settings=task_section(cfg, task),
        files=files,
        tokenizer_dir=rel(vocab.path, home),
    )
    return spec, unit


@dataclass
class SweepUnits:
    """One (variant, task) sweep: its key (which names its MLflow parent run) and its points."""

    variant: TrainedVariant
    task: str
    key: str
    params: dict[str, Any]
    points: list[tuple[PointSpec, Artifact]]


def sweep_units(
    cfg: FinetuneConfig,
    home: Path,
    variants: Sequence[TrainedVariant],
    data: dict[str, tuple[TaskDataSpec, Artifact]],
    vocab: Artifact,
    tracking: TrackingSpec,
) -> list[SweepUnits]:
    """Every (variant, task) sweep and its grid points, keyed."""
    tokenizer = vocab.manifest()["hash"]
    plans = []
    for v in variants:
        for task in cfg.tasks:
            settings = result_settings(cfg, task)
            modes = modes_for(cfg, task)
            data_spec_, data_unit = data[task]
            grid = cfg.tasks[task].grid
            key = content_key(
                "sweep", UNIT_VERSION, v.checkpoint, data_unit.key, grid, cfg.seeds, settings, modes
            )
            params = {
                "variant": v.name,
                "task": task,
                "checkpoint": v.checkpoint,
                "batch_sizes": grid.batch_sizes,
                "learning_rates": grid.learning_rates,
                "seeds": cfg.seeds,
                **settings,
            }
            points = []
            for p in grid_points(grid, cfg.seeds):
                unit = unit_artifact(
                    home,
                    "finetune",
                    UNIT_VERSION,
                    "point",
                    v.checkpoint,
                    tokenizer,
                    data_unit.key,
                    p.batch_size,
                    p.lr,
                    p.seed,
                    settings,
                    modes,
                )
                spec = PointSpec(
                    key=unit.key,
                    variant=v.name,
                    task=task,
                    settings=data_spec_.settings,
                    checkpoint=v.checkpoint,
                    data_dir=rel(data_unit.path, home),
                    tokenizer_dir=rel(vocab.path, home),
                    batch_size=p.batch_size,
                    lr=p.lr,
                    seed=p.seed,
                    modes=modes,
                    tracking=tracking,
                )
                points.append((spec, unit))
            plans.append(SweepUnits(v, task, key, params, points))
    return plans


def manifest(
    home: Path,
    data: dict[str, tuple[TaskDataSpec, Artifact]],
    data_results: dict[str, dict[str, Any]],
    plans: Sequence[SweepUnits],
    parents: dict[str, str | None],
    results: dict[str, dict[str, Any]],
    torch_threads: int,
) -> FinetuneManifest:
    """The stage manifest from the data units, the sweeps and every point's unit manifest."""
    tasks = {
        task: TaskDataInfo(
            data=rel(unit.path, home),
            metric=data_results[task]["metric"],
            counts=data_results[task]["counts"],
            full_counts=data_results[task]["full_counts"],
            majority=data_results[task]["majority"],
            stages=[s["name"] for s in data_results[task]["stages"]],
        )
        for task, (_, unit) in data.items()
    }
    sweeps = []
    for plan in plans:
        points = []
        for spec, unit in plan.points:
            r = results[spec.key]
            points.append(
                PointResult(
                    unit=rel(unit.path, home),
                    batch_size=r["batch_size"],
                    lr=r["lr"],
                    seed=r["seed"],
                    metrics=r["metrics"],
                    steps=r["steps"],
                    best_epoch=r["stages"][-1]["best_epoch"],
                    mlflow_run_id=r.get("mlflow_run_id"),
                    degenerate=r.get("degenerate", {}),
                )
            )
        sweeps.append(
            Sweep(
                variant=plan.variant.name,
                task=plan.task,
                metric=tasks[plan.task].metric,
                parent_run_id=parents.get(plan.key),
                points=points,
            )
        )
    modes = sorted({m for p in plans for s, _ in p.points for m in s.modes}, key=MODES.index)
    return FinetuneManifest(tasks=tasks, sweeps=sweeps, modes=modes, torch_threads=torch_threads)


SPEC_FILE = "spec.json"


def write_spec(unit: Artifact, spec: TaskDataSpec | PointSpec) -> None:
    """The unit's spec, in its directory before it runs (the task reads it from there)."""
    if not unit.done():
        write_atomic(unit.path / SPEC_FILE, spec.model_dump_json(indent=2) + "\n")


def read_spec(unit: Artifact, model: type[S]) -> S:
    return model.model_validate_json((unit.path / SPEC_FILE).read_text())


def rel(path: Path, home: Path) -> str:
    return str(Path(path).resolve().relative_to(home.resolve()))
