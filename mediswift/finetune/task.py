"""A downstream task as one plug-in: everything the pipeline needs to know about it.

A task module subclasses `DownstreamTask`, declares its settings class (its grid, epochs,
prompt length and any setting of its own, with their defaults), its raw files, how to read them
into splits, its target sentences, label parsing, metric, candidate grammar for constrained
scoring, majority baseline and table layout, and registers itself with
`mediswift.finetune.registry.register`. Nothing outside the task's module looks at a task's name
to decide behaviour: the recipe section `finetune.tasks.<name>` selects and configures it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mediswift.finetune.formats import Example, Label, TaskFormat
from mediswift.finetune.stats import Metric
from mediswift.sections import TaskSettings


@dataclass(frozen=True)
class Stage:
    """One stage of a task's training schedule: train on `train`, stop early on `dev`.

    A schedule of several stages is a chain (or two): a stage starts from the model chosen on
    the dev set of stage `after` (None: from the pre-trained checkpoint). A stage whose `train`
    items are unlabelled (label None) has them labelled first by the model chosen on stage
    `labels_from`, which reads split `label_split` (the same items, in the form that model was
    trained on). The last stage is the one evaluated (dev and test).
    """

    name: str
    train: str
    dev: str
    epochs: int
    # True when `train` is labelled by another stage's model before the stage (`labels_from`).
    pseudo_label: bool = False
    after: str | None = None
    labels_from: str | None = None
    label_split: str | None = None


def stage_json(stage: Stage) -> dict[str, Any]:
    """The stage as `data.json` lists it; the chain fields only when set, so a one-stage
    schedule is written as it always was."""
    out = asdict(stage)
    for name in ("after", "labels_from", "label_split"):
        if out[name] is None:
            del out[name]
    return out


@dataclass
class TaskData:
    """A task's examples by split name (`train`, `dev`, `test` at least) and its schedule.

    Most tasks have one stage (train on `train`, stop on `dev`); PubMedQA with PQA-A/PQA-U has
    a chain of stages (see `Stage`), each a grid of its own, the last one evaluated.
    """

    splits: dict[str, list[Example]]
    stages: list[Stage] = field(default_factory=list)


@dataclass(frozen=True)
class TableLayout:
    """How the task's results table is titled and printed."""

    stem: str  # file stem of the table, e.g. "table3_pubmedqa"
    title: str  # e.g. "Table 3: PubMedQA reasoning-required, PQA-L test accuracy (%)"
    axis: str  # y-axis label of the plots, e.g. "accuracy (%)"
    digits: int = 1  # decimals of the percentages


@dataclass(frozen=True)
class ExtraMetric:
    """A test metric reported beside the task's own, in another convention (e.g. the one a
    compared paper scores with). It is computed at evaluation from the saved test predictions
    of the chosen (batch, lr), so adding one re-trains nothing; it never takes part in the
    choice, which stays on the task's own dev metric."""

    label: str  # how the tables name it, e.g. "micro-F1, 11 classes incl. empty"
    fn: Metric


class DownstreamTask(TaskFormat):
    """Base of every task plug-in. Subclasses set the class attributes and the methods below."""

    name: ClassVar[str]
    metric_name: ClassVar[str]
    Settings: ClassVar[type[TaskSettings]]
    table: ClassVar[TableLayout]
    # The real upstream base of `files` and the mirror folder standing for it.
    upstream: ClassVar[str]
    mirror_folder: ClassVar[str]
    # Role -> file name under the task's `url` (what the finetune stage fetches).
    files: ClassVar[dict[str, str]]
    # Prediction modes the task supports ("score" needs a candidate grammar).
    modes: ClassVar[tuple[str, ...]] = ("generate", "score")
    # What the trivial baseline row of the task's table is called.
    baseline_name: ClassVar[str] = "majority class"
    # Name -> test metric reported beside `metric` (default: none).
    extra_metrics: ClassVar[dict[str, ExtraMetric]] = {}

    def __init__(self, settings: TaskSettings | None = None):
        self.settings = settings if settings is not None else self.Settings()

    # -- data ------------------------------------------------------------------------------
    def sources(self) -> dict[str, str]:
        """Role -> upstream URL of every raw file the task reads (before mirroring)."""
        base = self.settings.url.rstrip("/") + "/"
        return {role: base + name for role, name in self.files.items()}

    def eval_sources(self) -> dict[str, str]:
        """The raw files the dev and test splits come from (decontamination reads only these;
        default: every file)."""
        return self.sources()

    def split_settings(self) -> dict[str, Any]:
        """Settings besides the files that decide which examples are dev and test (default:
        none). They key the decontaminated corpus, so keep them to exactly those."""
        return {}

    def upstreams(self) -> dict[str, str]:
        """Upstream base -> mirror folder, for the recipe's mirror mapping."""
        return {self.upstream: self.mirror_folder}

    @abstractmethod
    def load(self, files: dict[str, Path]) -> TaskData:
        """Read the fetched raw files (role -> local path) into splits and a schedule."""

    def multi_stage(self) -> bool:
        """Whether the settings give the task a schedule of several stages (each stage a grid
        of its own, planned stage by stage; default: no)."""
        return False

    def final_stage(self) -> Stage:
        return Stage(self.name, "train", "dev", self.settings.epochs)

    def stage_epochs(self, stage: str) -> int:
        """The epochs of schedule stage `stage`, from the settings (default: `epochs`)."""
        return self.settings.epochs

    # -- evaluation ------------------------------------------------------------------------
    def scores(self, preds: Sequence[Label | None], golds: Sequence[Label]) -> dict[str, float]:
        """Extra metrics reported beside the main one (e.g. precision and recall)."""
        return {}

    def baseline(self, train: Sequence[Example], split: Sequence[Example]) -> list[Label]:
        """The trivial baseline's predictions on `split` (default: the majority label)."""
        return [self.majority([e.label for e in train])] * len(split)

    def baseline_label(self, train: Sequence[Example]) -> Any:
        """What the baseline predicts, for the manifest (default: the majority label)."""
        return self.majority([e.label for e in train])

    def candidates(self, chosen: Label | None) -> list:  # pragma: no cover - see modes
        raise NotImplementedError(f"{self.name} has no candidate grammar (modes: {self.modes})")
