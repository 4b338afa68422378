"""The fine-tuning plan: the unit spec of every task's data and every grid point.

Each is a `UnitSpec`: its key hashes exactly what the unit reads. A task's data unit reads its
raw files (by digest), the task's own result settings and the tokenizer; a grid point reads the
pre-trained checkpoint, the tokenizer, the task's data unit, its (batch, lr, seed), the shared
and the task's result settings and the prediction modes. A setting of one task never re-keys
another, and a scheduling setting (seeds, grid, concurrency) never re-keys a finished point.
The checkpoint path is the variant's content-addressed unit, so adding a variant to the recipe
does not re-key the sweeps of the others.

A task whose data has a schedule of several stages (PubMedQA with PQA-A/PQA-U) is planned stage
by stage (`mediswift.finetune.schedule`): each stage unit is a `StageSpec` (a `PointSpec` plus
its stage (`phase`), the key of the unit it starts from and the key of the `LabelSpec` unit whose pseudo
labels it trains on), so its key follows from the whole chain it reads. A one-stage task's
points stay `PointSpec`s, keyed as before.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field

from mediswift.artifacts import Artifact, content_key, file_digest, write_atomic
from mediswift.finetune.grid import grid_points
from mediswift.finetune.settings import FinetuneConfig
from mediswift.manifests import (
    FinetuneManifest,
    PointResult,
    Record,
    Sweep,
    TaskDataInfo,
    TrackingSpec,
    TrainedVariant,
)
from mediswift.units import UnitSpec, unkeyed

# Bump when a unit's content or meaning changes (data format, training or evaluation code).
# 3: a task's data is keyed on the task's own settings only (shared settings train, they do
# not prepare data). 4: keys are the unit specs.
UNIT_VERSION = 4
# A grid point's own version: 5: unparsed generations no longer hide a constant prediction from
# the degenerate flag (its data unit is unchanged, so it keeps UNIT_VERSION).
POINT_VERSION = 5
MODES = ("generate", "score")


class TaskDataSpec(UnitSpec):
    """What one task's data unit is made from."""

    stage: ClassVar[str] = "finetune"
    kind: ClassVar[str] = "data"
    version: ClassVar[int] = UNIT_VERSION

    task: str = Field(description="downstream task name")
    digests: dict[str, str] = Field(description="role -> sha256 of the raw file")
    task_settings: Record = Field(description="the task's result settings")
    tokenizer: str = Field(description="the tokenizer's hash")
    files: dict[str, str] = unkeyed(
        default_factory=dict, description="role -> raw file (relative to home; digests keyed)"
    )
    settings: Record = unkeyed(
        default_factory=dict, description="the finetune section with only this task in it"
    )
    tokenizer_dir: str = unkeyed("", "the vocab stage output (relative to home)")


class PointSpec(UnitSpec):
    """One grid point: fine-tune `variant` on `task` at (batch_size, lr, seed)."""

    stage: ClassVar[str] = "finetune"
    kind: ClassVar[str] = "point"
    version: ClassVar[int] = POINT_VERSION

    checkpoint: str = Field(description="pre-trained checkpoint (relative to home)")
    tokenizer: str = Field(description="the tokenizer's hash")
    data: str = Field(description="the key of the task's data unit")
    task: str = Field(description="downstream task name")
    batch_size: int
    lr: float
    seed: int
    shared_settings: Record = Field(description="the finetune section's shared result settings")
    task_settings: Record = Field(description="the task's result settings")
    modes: list[str] = Field(description="prediction modes evaluated")
    variant: str = unkeyed("", "pre-trained variant name")
    settings: Record = unkeyed(
        default_factory=dict, description="the finetune section with only this task in it"
    )
    data_dir: str = unkeyed("", "the task's data unit (relative to home)")
    tokenizer_dir: str = unkeyed("", "the vocab stage output (relative to home)")
    tracking: TrackingSpec = unkeyed(
        default_factory=lambda: TrackingSpec(uri=None, experiment=""),
        description="where the point logs (its sweep's parent run)",
    )

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.task}-b{self.batch_size}-lr{self.lr:g}-s{self.seed}"


# A stage unit's own version (a new kind: one-stage points keep POINT_VERSION). 2: an earlier
# stage's unit flags degenerate dev predictions, which its grid's choice avoids (labels units
# re-key with their labeller).
STAGE_VERSION = 2
LABELS_VERSION = 1


class StageSpec(PointSpec):
    """One grid point of one stage of a multi-stage schedule: train stage `phase` at (batch,
    lr, seed), from the pre-trained checkpoint (`start` empty) or from the stage unit `start`;
    on pseudo labels from the labels unit `labels` when the stage's items are unlabelled. The
    schedule's last stage is evaluated on dev and test like a one-stage point."""

    kind: ClassVar[str] = "stage"
    version: ClassVar[int] = STAGE_VERSION

    phase: str = Field(description="the schedule stage this unit trains (Jin et al.: phase)")
    start: str = Field("", description="key of the stage unit it starts from ('': pre-trained)")
    labels: str = Field("", description="key of the labels unit of its train split ('': none)")
    start_dir: str = unkeyed("", "the unit it starts from (relative to home)")
    labels_dir: str = unkeyed("", "the labels unit (relative to home)")

    @property
    def name(self) -> str:
        return (
            f"{self.variant}-{self.task}-{self.phase}-b{self.batch_size}-lr{self.lr:g}-s{self.seed}"
        )


class LabelSpec(UnitSpec):
    """Pseudo labels of one unlabelled split, predicted by a chosen stage unit (the labeller)."""

    stage: ClassVar[str] = "finetune"
    kind: ClassVar[str] = "labels"
    version: ClassVar[int] = LABELS_VERSION

    labeller: str = Field(description="key of the stage unit whose model labels")
    data: str = Field(description="the key of the task's data unit")
    split: str = Field(description="the split labelled (what the labeller reads)")
    tokenizer: str = Field(description="the tokenizer's hash")
    shared_settings: Record = Field(description="the finetune section's shared result settings")
    task_settings: Record = Field(description="the task's result settings")
    task: str = unkeyed("", "downstream task name (the data unit's)")
    variant: str = unkeyed("", "pre-trained variant name")
    seed: int = unkeyed(0, "the seed of the labeller's chain")
    labeller_dir: str = unkeyed("", "the labeller's unit (relative to home)")
    settings: Record = unkeyed(
        default_factory=dict, description="the finetune section with only this task in it"
    )
    data_dir: str = unkeyed("", "the task's data unit (relative to home)")
    tokenizer_dir: str = unkeyed("", "the vocab stage output (relative to home)")

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.task}-labels-{self.split}-s{self.seed}"


S = TypeVar("S", TaskDataSpec, PointSpec, LabelSpec)


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
    spec = TaskDataSpec(
        task=task,
        digests={role: file_digest(home / rel) for role, rel in sorted(files.items())},
        task_settings=cfg.tasks[task].result_settings(),
        tokenizer=vocab.manifest()["hash"],
        files=files,
        settings=task_section(cfg, task),
        tokenizer_dir=rel(vocab.path, home),
    )
    return spec, spec.artifact(home)


@dataclass
class SweepUnits:
    """One (variant, task) sweep: its key (which names its MLflow parent run) and its points.

    `staged`: the task's schedule has several stages; its `points` are then the grid's bases
    until `mediswift.finetune.schedule.Schedule` replaces them with the last stage's units, and
    `stages` lists the earlier stages (name, chosen batch and lr, their units)."""

    variant: TrainedVariant
    task: str
    key: str
    params: dict[str, Any]
    points: list[tuple[PointSpec, Artifact]]
    staged: bool = False
    stages: list[dict[str, Any]] = field(default_factory=list)


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
                "sweep",
                POINT_VERSION,
                v.checkpoint,
                data_unit.key,
                grid,
                cfg.seeds,
                settings,
                modes,
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
                spec = PointSpec(
                    checkpoint=v.checkpoint,
                    tokenizer=tokenizer,
                    data=data_unit.key,
                    task=task,
                    batch_size=p.batch_size,
                    lr=p.lr,
                    seed=p.seed,
                    shared_settings=settings["shared"],
                    task_settings=settings["task"],
                    modes=modes,
                    variant=v.name,
                    settings=data_spec_.settings,
                    data_dir=rel(data_unit.path, home),
                    tokenizer_dir=rel(vocab.path, home),
                    tracking=tracking,
                )
                points.append((spec, spec.artifact(home)))
            staged = cfg.task(task).multi_stage()
            plans.append(SweepUnits(v, task, key, params, points, staged))
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
                stages=plan.stages,
            )
        )
    modes = sorted({m for p in plans for s, _ in p.points for m in s.modes}, key=MODES.index)
    return FinetuneManifest(tasks=tasks, sweeps=sweeps, modes=modes, torch_threads=torch_threads)


SPEC_FILE = "spec.json"


def write_spec(unit: Artifact, spec: TaskDataSpec | PointSpec | LabelSpec) -> None:
    """The unit's spec, in its directory before it runs (the task reads it from there)."""
    if not unit.done():
        write_atomic(unit.path / SPEC_FILE, spec.model_dump_json(indent=2) + "\n")


def read_spec(unit: Artifact, model: type[S]) -> S:
    """The unit's spec; asked for a `PointSpec`, a stage unit's comes back as its `StageSpec`."""
    text = (unit.path / SPEC_FILE).read_text()
    if model is PointSpec and "phase" in json.loads(text):
        return StageSpec.model_validate_json(text)  # type: ignore[return-value]
    return model.model_validate_json(text)


def rel(path: Path, home: Path) -> str:
    return str(Path(path).resolve().relative_to(home.resolve()))
