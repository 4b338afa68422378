"""The fine-tuning plan: the unit spec of every task's data and every grid point.

Each is a `UnitSpec`: its key hashes exactly what the unit reads. A task's data unit reads its
raw files (by digest), the task's own result settings and the tokenizer; a grid point reads the
pre-trained checkpoint, the tokenizer, the task's data unit, its (batch, lr, seed), the shared
and the task's result settings and the prediction modes. A setting of one task never re-keys
another, and a scheduling setting (seeds, grid, concurrency) never re-keys a finished point.
The settings a unit runs with are the ones its key hashes: each spec holds the sections it
reads whole and typed (`shared_settings`: the section's shared settings, `task_settings`: the
task's own), and `UnitSpec.keyed` takes only their result settings, so the device or the
concurrency in them never re-keys a unit. No unkeyed copy of a section travels with a unit.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field, SerializeAsAny, model_validator

from mediswift.artifacts import Artifact, content_key, file_digest, write_atomic
from mediswift.finetune.grid import grid_points
from mediswift.finetune.registry import task_class
from mediswift.finetune.results import StageUnitManifest, TaskDataManifest
from mediswift.finetune.settings import FinetuneConfig, FinetuneShared, task_settings_of
from mediswift.finetune.task import Stage
from mediswift.manifests import (
    FinetuneManifest,
    PointResult,
    Sweep,
    TaskDataInfo,
    TrackingSpec,
    TrainedVariant,
)
from mediswift.sections import TaskSettings
from mediswift.units import UnitSpec, unkeyed

# Bump when a unit's content or meaning changes (data format, training or evaluation code).
# 3: a task's data is keyed on the task's own settings only (shared settings train, they do
# not prepare data). 4: keys are the unit specs.
UNIT_VERSION = 4
# A grid point's own version: 5: unparsed generations no longer hide a constant prediction from
# the degenerate flag (its data unit is unchanged, so it keeps UNIT_VERSION).
POINT_VERSION = 5
MODES = ("generate", "score")


class TaskUnitSpec(UnitSpec):
    """A unit of one task: its `task_settings` are the task's own settings class (a spec read
    back from its file holds them as a mapping, validated by that class)."""

    @model_validator(mode="before")
    @classmethod
    def _task_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "task_settings" in data:
            settings = task_settings_of(data.get("task", ""), data["task_settings"])
            data = {**data, "task_settings": settings}
        return data

    def task_plugin(self) -> Any:
        """The task plug-in bound to the spec's own settings of it."""
        return task_class(self.task)(self.task_settings)  # type: ignore[attr-defined]


# A task's own section; its key takes the section's result settings (`UnitSpec.keyed`).
TaskSection = SerializeAsAny[TaskSettings]


class TaskDataSpec(TaskUnitSpec):
    """What one task's data unit is made from."""

    stage: ClassVar[str] = "finetune"
    kind: ClassVar[str] = "data"
    version: ClassVar[int] = UNIT_VERSION

    task: str = Field(description="downstream task name")
    digests: dict[str, str] = Field(description="role -> sha256 of the raw file")
    task_settings: TaskSection = Field(description="the task's settings (keyed: result ones)")
    tokenizer: str = Field(description="the tokenizer's hash")
    files: dict[str, str] = unkeyed(
        default_factory=dict, description="role -> raw file (relative to home; digests keyed)"
    )
    tokenizer_dir: str = unkeyed("", "the vocab stage output (relative to home)")


class PointSpec(TaskUnitSpec):
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
    shared_settings: FinetuneShared = Field(
        description="the finetune section's shared settings (keyed: result ones)"
    )
    task_settings: TaskSection = Field(description="the task's settings (keyed: result ones)")
    modes: list[str] = Field(description="prediction modes evaluated")
    variant: str = unkeyed("", "pre-trained variant name")
    data_dir: str = unkeyed("", "the task's data unit (relative to home)")
    tokenizer_dir: str = unkeyed("", "the vocab stage output (relative to home)")
    tracking: TrackingSpec = unkeyed(
        default_factory=lambda: TrackingSpec(uri=None, experiment=""),
        description="where the point logs (its sweep's parent run)",
    )

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.task}-b{self.batch_size}-lr{self.lr:g}-s{self.seed}"

    # What a grid point trains (a stage unit says otherwise: `StageSpec`).
    def trains(self, schedule: list[Stage]) -> list[Stage]:
        """The schedule's stages this unit trains: a point trains a one-stage schedule."""
        if len(schedule) > 1:
            raise ValueError(
                f"{self.task}: its data has a schedule of {len(schedule)} stages, which are "
                "trained as stage units (StageSpec), not as one grid point"
            )
        return schedule

    def evaluated(self, schedule: list[Stage]) -> bool:
        """Whether the unit is scored on dev and test (a schedule's last stage is)."""
        return True

    def chain(self) -> dict[str, str]:
        """Where a stage unit starts and what it trains on, as its manifest says (a point
        starts from its checkpoint: nothing to say)."""
        return {}

    def start_unit(self) -> str:
        """The unit whose best state this unit starts from ('': the pre-trained checkpoint)."""
        return ""

    def labels_unit(self) -> str:
        """The labels unit of its pseudo-labelled stage ('': none)."""
        return ""


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

    def trains(self, schedule: list[Stage]) -> list[Stage]:
        stages = [st for st in schedule if st.name == self.phase]
        if not stages:
            raise ValueError(f"{self.task}: its data has no stage {self.phase!r}")
        return stages

    def evaluated(self, schedule: list[Stage]) -> bool:
        return self.phase == schedule[-1].name

    def chain(self) -> dict[str, str]:
        chain = {"phase": self.phase, "start": self.start_dir or self.checkpoint}
        return chain | ({"labels": self.labels_dir} if self.labels_dir else {})

    def start_unit(self) -> str:
        return self.start_dir

    def labels_unit(self) -> str:
        return self.labels_dir


class LabelSpec(TaskUnitSpec):
    """Pseudo labels of one unlabelled split, predicted by a chosen stage unit (the labeller)."""

    stage: ClassVar[str] = "finetune"
    kind: ClassVar[str] = "labels"
    version: ClassVar[int] = LABELS_VERSION

    labeller: str = Field(description="key of the stage unit whose model labels")
    data: str = Field(description="the key of the task's data unit")
    split: str = Field(description="the split labelled (what the labeller reads)")
    tokenizer: str = Field(description="the tokenizer's hash")
    shared_settings: FinetuneShared = Field(
        description="the finetune section's shared settings (keyed: result ones)"
    )
    task_settings: TaskSection = Field(description="the task's settings (keyed: result ones)")
    task: str = unkeyed("", "downstream task name (the data unit's)")
    variant: str = unkeyed("", "pre-trained variant name")
    seed: int = unkeyed(0, "the seed of the labeller's chain")
    labeller_dir: str = unkeyed("", "the labeller's unit (relative to home)")
    data_dir: str = unkeyed("", "the task's data unit (relative to home)")
    tokenizer_dir: str = unkeyed("", "the vocab stage output (relative to home)")

    @property
    def name(self) -> str:
        return f"{self.variant}-{self.task}-labels-{self.split}-s{self.seed}"


S = TypeVar("S", TaskDataSpec, PointSpec, LabelSpec)


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
        task_settings=cfg.tasks[task],
        tokenizer=vocab.manifest()["hash"],
        files=files,
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
    dirs = UnitDirs(home, rel(vocab.path, home), vocab.manifest()["hash"], tracking)
    return [sweep_of(cfg, dirs, v, task, data[task][1]) for v in variants for task in cfg.tasks]


@dataclass(frozen=True)
class UnitDirs:
    """What every point of the stage shares besides settings: the home, the tokenizer (its
    folder and hash) and where the points log."""

    home: Path
    tokenizer_dir: str
    tokenizer: str
    tracking: TrackingSpec


def sweep_of(
    cfg: FinetuneConfig, dirs: UnitDirs, v: TrainedVariant, task: str, data_unit: Artifact
) -> SweepUnits:
    """The sweep of variant `v` on `task`: its key, its parent run's params and its points."""
    settings = result_settings(cfg, task)
    modes = modes_for(cfg, task)
    grid = cfg.tasks[task].grid
    key = content_key(
        "sweep", POINT_VERSION, v.checkpoint, data_unit.key, grid, cfg.seeds, settings, modes
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
    base = dict(
        checkpoint=v.checkpoint,
        tokenizer=dirs.tokenizer,
        data=data_unit.key,
        task=task,
        shared_settings=cfg.shared(),
        task_settings=cfg.tasks[task],
        modes=modes,
        variant=v.name,
        data_dir=rel(data_unit.path, dirs.home),
        tokenizer_dir=dirs.tokenizer_dir,
        tracking=dirs.tracking,
    )
    points = []
    for p in grid_points(grid, cfg.seeds):
        spec = PointSpec(**base, batch_size=p.batch_size, lr=p.lr, seed=p.seed)
        points.append((spec, spec.artifact(dirs.home)))
    return SweepUnits(v, task, key, params, points, cfg.task(task).multi_stage())


def manifest(
    home: Path,
    data: dict[str, tuple[TaskDataSpec, Artifact]],
    data_results: dict[str, TaskDataManifest],
    plans: Sequence[SweepUnits],
    parents: dict[str, str | None],
    results: Mapping[str, StageUnitManifest],
    torch_threads: int,
) -> FinetuneManifest:
    """The stage manifest from the data units, the sweeps and every point's unit manifest."""
    tasks = {
        task: TaskDataInfo(
            data=rel(unit.path, home),
            metric=data_results[task].metric,
            counts=data_results[task].counts,
            full_counts=data_results[task].full_counts,
            majority=data_results[task].majority,
            stages=[s.name for s in data_results[task].stages],
        )
        for task, (_, unit) in data.items()
    }
    sweeps = [
        Sweep(
            variant=plan.variant.name,
            task=plan.task,
            metric=tasks[plan.task].metric,
            parent_run_id=parents.get(plan.key),
            points=[point_result(results[s.key], unit, home) for s, unit in plan.points],
            stages=plan.stages,
        )
        for plan in plans
    ]
    modes = sorted({m for p in plans for s, _ in p.points for m in s.modes}, key=MODES.index)
    return FinetuneManifest(tasks=tasks, sweeps=sweeps, modes=modes, torch_threads=torch_threads)


def point_result(r: StageUnitManifest, unit: Artifact, home: Path) -> PointResult:
    """A finished point as the stage manifest lists it."""
    return PointResult(
        unit=rel(unit.path, home),
        batch_size=r.batch_size,
        lr=r.lr,
        seed=r.seed,
        metrics=r.metrics,
        steps=r.steps,
        best_epoch=r.best.best_epoch,
        mlflow_run_id=r.mlflow_run_id,
        degenerate=r.degenerate,
    )


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
