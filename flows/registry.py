"""The pipeline's stages, in order, each with the flow that runs it: the one place stage names
and their order are written. The stage list of the flow, the command line's `--stages`, the
plan of stage outputs and the dispatch all come from here.

Adding a stage is a module and a line: the module holds the stage's library part (its
`STAGE = StageDef(...)`, units, `run_unit`, `collect`) and its flow (`run(cfg, home, out,
inputs) -> manifest`, submitting one task per unit); the line puts it in `STAGES` after the
stages it reads. See the README's "Adding a stage".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.stages import download, evaluate, filter, finetune, parse, pretrain, tokenize, vocab
from mediswift import graph
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.stage_def import StageDef, check_order, select_stages
from mediswift.stages import download as download_lib
from mediswift.stages import evaluate as evaluate_lib
from mediswift.stages import filter as filter_lib
from mediswift.stages import finetune as finetune_lib
from mediswift.stages import parse as parse_lib
from mediswift.stages import pretrain as pretrain_lib
from mediswift.stages import tokenize as tokenize_lib
from mediswift.stages import vocab as vocab_lib

StageRun = Callable[[PipelineConfig, Path, Artifact, dict[str, Artifact]], Any]


@dataclass(frozen=True)
class Stage:
    define: StageDef  # name, inputs, manifest type, version
    run: StageRun  # the stage's flow: submits its units, writes the manifest last
    # Its unit tasks go to the Dask cluster when the recipe's executor is `dask` (tokenize
    # picks its own runner: a process pool locally; see `flows.stages.tokenize`).
    on_cluster: bool = False

    @property
    def name(self) -> str:
        return self.define.name


STAGES: tuple[Stage, ...] = (
    Stage(download_lib.STAGE, download.run, on_cluster=True),
    Stage(parse_lib.STAGE, parse.run, on_cluster=True),
    Stage(filter_lib.STAGE, filter.run, on_cluster=True),
    Stage(vocab_lib.STAGE, vocab.run),
    Stage(tokenize_lib.STAGE, tokenize.run),
    Stage(pretrain_lib.STAGE, pretrain.run),
    Stage(finetune_lib.STAGE, finetune.run),
    Stage(evaluate_lib.STAGE, evaluate.run),
)
check_order([s.define for s in STAGES])


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def by_name(name: str) -> Stage:
    return next(s for s in STAGES if s.name == name)


def parse_stages(selection: str | list[str] | None) -> list[str]:
    """A stage selection ('download,parse', a list, None or 'all') in pipeline order."""
    return select_stages([s.define for s in STAGES], selection)


def plan(cfg: PipelineConfig, home: Path, listing: str | None = None) -> dict[str, Artifact]:
    """Every stage's output artifact for this config, in order (`mediswift.graph.plan`)."""
    return graph.plan(cfg, home, [s.define for s in STAGES], listing)


def manifest_reference() -> str:
    """`docs/manifests.md`: every stage's manifest and the fine-tuning unit specs."""
    from mediswift.finetune.keys import LabelSpec, PointSpec, StageSpec, TaskDataSpec
    from mediswift.manifests import reference

    stages = [(s.name, s.define.manifest) for s in STAGES]
    return reference(stages, (TaskDataSpec, PointSpec, StageSpec, LabelSpec))
