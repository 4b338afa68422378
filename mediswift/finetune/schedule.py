"""Multi-stage sweeps planned stage by stage: a grid per stage (Appendix A.2).

A task whose data lists several stages (PubMedQA with PQA-A/PQA-U: see
`mediswift.finetune.pubmedqa`) is not one unit per grid point: every stage is a grid of its
own. Seeds are independent replicates. A stage's (batch, lr) is chosen on its own dev set, by
the best mean over seeds of each unit's best dev metric (`grid.choose`); then, for every seed,
the unit of that seed at the chosen (batch, lr) starts that seed's units of the next stage (the
stage's `after`), and labels the unlabelled split of a stage that names it `labels_from` (one
labels unit per seed). The last stage is the grid the rest of the pipeline knows: its units are
the sweep's points (selection, tables, registry and export read them as they read one-stage
points).

Every unit is keyed by what it reads (`StageSpec`, `LabelSpec`): the key of the unit it starts
from and of the labels it trains on are part of its key, so a changed choice upstream re-keys
exactly the units downstream of it. Planning is sequential (a stage's keys need the choice of
the stage before), so `Schedule` hands out the units whose inputs are decided, round by round;
units found done (their manifest written) are read back, never handed out again.

Degenerate models (one label for everything, or none) are flagged at every stage, as the last
stage's are: an earlier stage's choice avoids a (batch, lr) with a degenerate seed while one
without exists (`grid.choose`), and a labeller whose pseudo labels are degenerate is named; both
go to the stage's summary (`StageChoice`) and the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediswift.artifacts import Artifact, unit_at
from mediswift.finetune.grid import choose
from mediswift.finetune.keys import (
    LabelSpec,
    PointSpec,
    StageSpec,
    SweepUnits,
    TaskDataSpec,
    rel,
)
from mediswift.finetune.results import TRAINED, LabelsManifest, StageUnitManifest
from mediswift.finetune.task import Stage
from mediswift.manifests import TrackingSpec

log = logging.getLogger(__name__)

Unit = tuple[StageSpec | LabelSpec, Artifact]
# What a unit of a schedule returns: a stage unit's manifest, or a labels unit's.
UnitResult = StageUnitManifest | LabelsManifest


@dataclass
class StagedSweep:
    """One multi-stage (variant, task) sweep as it is being planned."""

    plan: SweepUnits
    stages: list[Stage]  # the task's schedule, in order; the last one is evaluated
    data: tuple[TaskDataSpec, Artifact]
    units: dict[str, list[tuple[StageSpec, Artifact]]] = field(default_factory=dict)
    chosen: dict[str, dict[str, Any]] = field(default_factory=dict)
    # labeller stage -> seed -> (labels unit of the split it labels)
    labels: dict[str, dict[int, tuple[LabelSpec, Artifact]]] = field(default_factory=dict)
    # the grid points (batch, lr, seed and settings) every stage's units are made from
    bases: list[PointSpec] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bases = self.bases or [s for s, _ in self.plan.points]

    @property
    def final(self) -> str:
        return self.stages[-1].name


class Schedule:
    """The stage-by-stage plan of every multi-stage sweep (library side: no orchestration).

    Use: `while units := schedule.next_units(): run them; schedule.record(results)`; then
    every staged plan's `points` are its last stage's units and `stages` its earlier ones.
    """

    def __init__(
        self,
        home: Path,
        plans: Sequence[SweepUnits],
        data: dict[str, tuple[TaskDataSpec, Artifact]],
        schedules: dict[str, list[Stage]],
        tracking: TrackingSpec,
        parents: dict[str, str | None],
    ) -> None:
        """`schedules`: task -> the schedule its data unit lists."""
        self.home = home
        self.tracking = tracking
        self.parents = parents
        self.results: dict[str, UnitResult] = {}
        self.sweeps = []
        for plan in plans:
            stages = schedules[plan.task]
            if not plan.staged:
                continue
            if len(stages) < 2:
                raise ValueError(f"{plan.task}: a staged sweep, but its data has one stage")
            self.sweeps.append(StagedSweep(plan, stages, data[plan.task]))

    # -- planning --------------------------------------------------------------------------
    def next_units(self) -> list[Unit]:
        """Every unit whose inputs are decided and that is not done yet; done ones are read
        back (their manifest) and planning goes on past them."""
        out: list[Unit] = []
        moved = True
        while moved:
            moved = False
            for sw in self.sweeps:
                for spec, unit in self._ready(sw):
                    done = self._done(spec)
                    if done is not None:
                        self.results[spec.key] = done
                        moved = True
                    else:
                        out.append((spec, unit))
                moved |= self._choose(sw)
        for sw in self.sweeps:
            sw.plan.stages = self.summary(sw)
        return out

    def _done(self, spec: StageSpec | LabelSpec) -> UnitResult | None:
        """What the unit returned when it finished in an earlier run, or None."""
        done = spec.done_result(self.home)
        if done is None:
            return None
        if isinstance(spec, LabelSpec):
            return LabelsManifest.model_validate(done)
        return TRAINED.validate_python(done)

    def record(self, results: Mapping[str, UnitResult]) -> None:
        """Results (unit manifests) of units handed out, by unit key."""
        self.results.update(results)

    def record_round(
        self, stage_results: Mapping[str, StageUnitManifest], labels: Sequence[str]
    ) -> None:
        """A round's stage unit manifests (by key) and its labels units, read back here."""
        self.record(stage_results)
        self.record(
            {
                k: LabelsManifest.model_validate(unit_at(self.home, "finetune", k).manifest())
                for k in labels
            }
        )

    def trained(self) -> dict[str, StageUnitManifest]:
        """Every stage unit's manifest by key (the labels units' left out)."""
        return {k: r for k, r in self.results.items() if isinstance(r, StageUnitManifest)}

    def finished(self) -> bool:
        return all(
            sw.final in sw.units and all(s.key in self.results for s, _ in sw.units[sw.final])
            for sw in self.sweeps
        )

    def _trained(self, key: str) -> StageUnitManifest:
        result = self.results[key]
        if not isinstance(result, StageUnitManifest):
            raise TypeError(f"unit {key} is a labels unit, not a stage unit")
        return result

    def _tracking(self, sw: StagedSweep) -> TrackingSpec:
        return self.tracking.model_copy(update={"parent_run_id": self.parents.get(sw.plan.key)})

    def _ready(self, sw: StagedSweep) -> list[Unit]:
        """Plan the units of every stage whose start and labels are decided."""
        out: list[Unit] = []
        for stage in sw.stages:
            name = stage.name
            if name in sw.units:
                continue
            after, labeller = stage.after, stage.labels_from
            if after is not None and after not in sw.chosen:
                continue
            if labeller is not None:
                if labeller not in sw.chosen:
                    continue
                made = sw.labels.setdefault(labeller, {})
                if not made:
                    for seed, unit in self._chosen_units(sw, labeller).items():
                        made[seed] = self._labels_unit(sw, unit, stage.label_split)
                        out.append(made[seed])
                if any(s.key not in self.results for s, _ in made.values()):
                    continue
                self._warn_labels(sw, labeller)
            sw.units[name] = []
            starts = self._chosen_units(sw, after) if after else {}
            for base in sw.bases:
                start = starts.get(base.seed)
                label = sw.labels[labeller][base.seed] if labeller else None
                spec = StageSpec(
                    **{**dict(base), "tracking": self._tracking(sw)},
                    phase=name,
                    start=start[0].key if start else "",
                    start_dir=rel(start[1].path, self.home) if start else "",
                    labels=label[0].key if label else "",
                    labels_dir=rel(label[1].path, self.home) if label else "",
                )
                sw.units[name].append((spec, spec.artifact(self.home)))
            out += sw.units[name]
            if name == sw.final:
                sw.plan.points = list(sw.units[name])
        return [u for u in out if u[0].key not in self.results]

    def _labels_unit(
        self, sw: StagedSweep, labeller: tuple[StageSpec, Artifact], split: str
    ) -> tuple[LabelSpec, Artifact]:
        spec, unit = labeller
        _, data_unit = sw.data
        labels = LabelSpec(
            labeller=spec.key,
            data=data_unit.key,
            split=split,
            tokenizer=spec.tokenizer,
            shared_settings=spec.shared_settings,
            task_settings=spec.task_settings,
            task=spec.task,
            variant=spec.variant,
            seed=spec.seed,
            labeller_dir=rel(unit.path, self.home),
            data_dir=rel(data_unit.path, self.home),
            tokenizer_dir=spec.tokenizer_dir,
        )
        return labels, labels.artifact(self.home)

    def _chosen_units(self, sw: StagedSweep, stage: str) -> dict[int, tuple[StageSpec, Artifact]]:
        """Seed -> the stage's unit at its chosen (batch, lr)."""
        c = sw.chosen[stage]
        return {
            s.seed: (s, u)
            for s, u in sw.units[stage]
            if (s.batch_size, s.lr) == (c["batch_size"], c["lr"])
        }

    def _choose(self, sw: StagedSweep) -> bool:
        """Choose every earlier stage whose units are all done; True if any was chosen."""
        moved = False
        for name, units in sw.units.items():
            if name == sw.final or name in sw.chosen:
                continue
            if any(s.key not in self.results for s, _ in units):
                continue
            points = [
                {
                    "batch_size": s.batch_size,
                    "lr": s.lr,
                    "seed": s.seed,
                    "dev": self._trained(s.key).best.best_dev,
                    "degenerate": self._trained(s.key).degenerate,
                }
                for s, _ in units
            ]
            sw.chosen[name] = c = choose(points)
            if c["degenerate_seeds"]:
                log.warning(
                    "%s %s: stage %s: %d of %d seeds of the chosen (batch %d, lr %g) are "
                    "degenerate on dev (every (batch, lr) has one)",
                    sw.plan.variant.name, sw.plan.task, name, c["degenerate_seeds"],
                    len(c["seeds"]), c["batch_size"], c["lr"],
                )  # fmt: skip
            moved = True
        return moved

    def _degenerate_labels(self, sw: StagedSweep, labeller: str) -> dict[str, str]:
        """Seed -> why the labels `labeller`'s chosen units made are degenerate (done ones)."""
        out = {}
        for seed, (spec, _) in sw.labels.get(labeller, {}).items():
            made = self.results.get(spec.key)
            why = made.degenerate if isinstance(made, LabelsManifest) else None
            if why:
                out[str(seed)] = why
        return out

    def _warn_labels(self, sw: StagedSweep, labeller: str) -> None:
        for seed, why in self._degenerate_labels(sw, labeller).items():
            log.warning(
                "%s %s: the labeller %s of seed %s gives degenerate pseudo labels (%s)",
                sw.plan.variant.name, sw.plan.task, labeller, seed, why,
            )  # fmt: skip

    def summary(self, sw: StagedSweep) -> list[dict[str, Any]]:
        """The earlier stages of `sw` as the stage manifest lists them."""
        out = []
        for stage in sw.stages:
            name = stage.name
            if name == sw.final or name not in sw.chosen:
                continue
            c = sw.chosen[name]
            out.append(
                {
                    "stage": name,
                    "after": stage.after,
                    "labels_from": stage.labels_from,
                    "batch_size": c["batch_size"],
                    "lr": c["lr"],
                    "dev_mean": c["dev_mean"],
                    "chosen": [
                        rel(u.path, self.home) for _, u in self._chosen_units(sw, name).values()
                    ],
                    "units": [rel(u.path, self.home) for _, u in sw.units[name]],
                    "labels": [rel(u.path, self.home) for _, u in sw.labels.get(name, {}).values()],
                    "degenerate_seeds": c["degenerate_seeds"],
                    "avoided_degenerate": c["avoided_degenerate"],
                    "degenerate_labels": self._degenerate_labels(sw, name),
                }
            )
        return out
