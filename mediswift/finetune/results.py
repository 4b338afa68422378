"""What the fine-tuning units return: their manifests, typed.

Every unit of the finetune stage writes one of these as its `manifest.json` (and a point also
as `metrics.json`), and its runner returns the same model whether the unit has just finished
or was found done (read back from its manifest), so the schedule, the stage manifest and the
MLflow parent run read fields, not dict keys. The JSON on disk is what the units have always
written: optional fields are left out when unset (`unit_json`), so manifests of finished units
validate as they are.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_serializer

from mediswift.finetune.task import Stage, stage_json
from mediswift.manifests import Baseline, Manifest, Record

# A history row: epoch and step are counts, the losses and the dev metric are floats; the
# union keeps each as it was written.
HistoryRow = dict[str, float | int]


class TaskFiles(BaseModel):
    """A task's raw files as the finetune stage fetched them."""

    files: dict[str, str] = Field(description="role -> raw file (relative to home)")


class TaskDataManifest(Manifest):
    """A task's data unit (`data.json`): its splits' counts, schedule and trivial baseline."""

    task: str
    metric: str = Field(description="name of the task metric")
    counts: dict[str, int] = Field(description="examples per split, after caps")
    full_counts: dict[str, int] = Field(description="examples per split, before caps")
    stages: list[Stage] = Field(description="the training schedule, in order")
    tokenizer: str | None = Field(description="hash of the tokenizer of the kept token ids")
    majority: Baseline

    @field_serializer("stages")
    def _stages(self, stages: list[Stage]) -> list[Record]:
        return [stage_json(s) for s in stages]  # chain fields only where set, as data.json


class StageRecord(BaseModel):
    """One schedule stage as a unit trained it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    train: int = Field(description="training examples (after pseudo labelling)")
    dev: int = Field(description="dev examples early stopping read")
    best_epoch: int = Field(description="the epoch whose state the unit keeps (>= 1)")
    best_dev: float = Field(description="its dev metric, in the early-stopping mode")
    steps: int
    stopped_early: bool
    history: list[HistoryRow] = Field(description="epoch, step, train loss and dev metric")
    pseudo_labels: dict[str, int] | None = Field(
        None, description="label (JSON) -> count of the pseudo labels trained on"
    )


class StageUnitManifest(Manifest):
    """A training unit: a grid point, or one stage of a multi-stage schedule. An earlier
    stage's unit is this alone: its best dev metric in the early-stopping mode, no test."""

    mlflow_run_id: str | None = None
    variant: str
    task: str
    metric: str = Field(description="name of the task metric")
    phase: str | None = Field(None, description="the schedule stage (a stage unit only)")
    start: str | None = Field(None, description="the checkpoint or unit it started from")
    labels: str | None = Field(None, description="the labels unit it trained on")
    batch_size: int
    lr: float
    seed: int
    n_prompt: int = Field(description="soft-prompt tokens")
    max_len: int = Field(description="context tokens of a sequence")
    source_budget: int = Field(description="source tokens kept of an example")
    max_new_tokens: int = Field(description="generation bound")
    reactivated_weights: int = Field(description="masked weights that trained densely")
    params: int
    stages: list[StageRecord]
    steps: int = Field(description="optimizer steps over every stage")
    metrics: dict[str, float] = Field(description="<split>_<mode>[_<extra>]")
    degenerate: dict[str, str] = Field(description="<split>_<mode> -> why degenerate")
    checkpoint: str = Field(description="its best state (relative to the unit)")

    @property
    def best(self) -> StageRecord:
        """The stage the unit ends with (what the next stage or the selection reads)."""
        return self.stages[-1]


class PointManifest(StageUnitManifest):
    """An evaluated unit (a one-stage point, or a schedule's last stage): its best state
    scored on dev and test in every prediction mode, with the predictions kept."""

    unparsed_generations: dict[str, int] = Field(
        description="split -> generations that name no label (counted wrong)"
    )
    predictions: dict[str, str] = Field(description="mode -> predictions file (in the unit)")


class LabelsManifest(Manifest):
    """A labels unit: pseudo labels of an unlabelled split, by a chosen stage unit's model."""

    task: str
    variant: str
    seed: int
    split: str = Field(description="the split labelled")
    labeller: str = Field(description="the labelling stage unit (relative to home)")
    mode: str = Field(description="how it labels: constrained scoring, or generation")
    items: int
    labelled: int = Field(description="items given a label")
    counts: dict[str, int] = Field(description="label (JSON) -> count")
    degenerate: str | None = Field(description="why the labels are degenerate, if they are")
    labels: str = Field(description="the labels file (in the unit)")


TrainedUnit = PointManifest | StageUnitManifest


def unit_json(result: BaseModel, drop_unset: bool = True) -> dict[str, Any]:
    """What a unit writes: the result's fields but `stage` and `key` (the manifest adds them);
    `drop_unset`: optional fields left out when None, as the units always wrote them."""
    return result.model_dump(mode="json", exclude={"stage", "key"}, exclude_none=drop_unset)


# A training unit's manifest read back: an evaluated point's, or an earlier stage's.
TRAINED: TypeAdapter[TrainedUnit] = TypeAdapter(TrainedUnit)
