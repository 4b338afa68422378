"""One grid point: a (variant, task, batch size, learning rate, seed) fine-tune, end to end.

`run_point` builds the unit (its starting model: the pre-trained checkpoint made dense, or the
saved best state of the stage unit it starts from, `mediswift.finetune.finetuned`; and its
splits, encoded), fits its stage (a multi-stage schedule's stage unit trains its own stage:
`mediswift.finetune.schedule`), predicts dev and test with the best state in every prediction
mode, and writes the unit: `checkpoint/` (model.safetensors + config.json as
`mediswift.train.checkpoint` lays them out, plus `prompt.safetensors`), `metrics.json`,
`predictions_<mode>.jsonl`, and `manifest.json` last. An earlier stage's unit writes
`checkpoint/`, `metrics.json` (its best dev metric) and `manifest.json` only; a labels unit
(`run_labels`) writes `labels.jsonl`. Every runner reads its settings from its spec's keyed
fields, and returns its manifest typed (`mediswift.finetune.results`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel

from mediswift.artifacts import MANIFEST, Artifact, write_atomic
from mediswift.finetune.datasets import load_prepared, load_token_ids, schedule_of

# The prompt file's name, still importable from here (a point's checkpoint is read by export).
from mediswift.finetune.finetuned import PROMPT_FILE as PROMPT_FILE
from mediswift.finetune.finetuned import (
    load_finetuned,
    load_pretrained,
    pick_device,
    save_finetuned,
)
from mediswift.finetune.formats import label_to_json
from mediswift.finetune.keys import LabelSpec, PointSpec
from mediswift.finetune.labels import LABELS_FILE, apply_labels, pseudo_label, read_labels
from mediswift.finetune.predictions import Scores, predictions_file, score_split
from mediswift.finetune.results import (
    TRAINED,
    LabelsManifest,
    PointManifest,
    StageRecord,
    StageUnitManifest,
    TrainedUnit,
    unit_json,
)
from mediswift.finetune.scoring import (
    Encoded,
    TokenizerLike,
    encode_examples,
    max_target_tokens,
    predict,
    source_budget,
)
from mediswift.finetune.settings import FinetuneShared
from mediswift.finetune.stats import degenerate
from mediswift.finetune.task import Stage
from mediswift.finetune.trainer import FitResult, LogFn, TrainSettings, fit
from mediswift.model.soft_prompt import PromptedLM
from mediswift.train.finite import NonFiniteLoss


def settings_for(
    cfg: FinetuneShared, batch_size: int, lr: float, seed: int, max_new: int, early_stop_on: str
) -> TrainSettings:
    """The trainer's settings for one point (epochs are set per stage of the schedule): the
    section's settings the trainer shares by name, then the point's own."""
    own = {
        "batch_size": batch_size,
        "lr": lr,
        "epochs": 1,
        "seed": seed,
        "early_stop_on": early_stop_on,  # the task may not support the section's mode
        "max_new_tokens": max_new,
    }
    shared = {
        f.name: getattr(cfg, f.name)
        for f in fields(TrainSettings)
        if f.name in type(cfg).model_fields and f.name not in own
    }
    return TrainSettings(**shared, **own)


def data_budget(
    shared: FinetuneShared,
    task: Any,
    tok: TokenizerLike,
    schedule: list[Stage],
    splits: dict[str, list[Any]],
    block_size: int,
) -> Budget:
    """The context, source and generation bounds of a task's prepared data: the same for
    every unit of the task, whatever stage it trains or labels."""
    max_len = min(shared.max_len, block_size)
    train_targets = sorted({e.target for st in schedule for e in splits[st.train]})
    targets = task.budget_targets(train_targets)
    n = task.settings.prompt_tokens
    return Budget(
        max_len, source_budget(tok, targets, n, max_len, task.name), max_target_tokens(tok, targets)
    )


@dataclass(frozen=True)
class Budget:
    """A task's token bounds (`data_budget`)."""

    max_len: int  # context tokens of a sequence
    source: int  # source tokens kept of an example
    max_new: int  # generation bound


@dataclass
class PointRun:
    """A unit ready to train (`build`): its task, model, encoded splits and trainer settings."""

    spec: PointSpec
    task: Any
    model: PromptedLM
    stages: list[Stage]  # the schedule's stages this unit trains, in order
    evaluated: bool  # the schedule's last stage: scored on dev and test
    data: dict[str, list[Encoded]]  # the splits it reads, encoded
    budget: Budget
    loaded: dict[str, int]  # reactivated weights and parameters of the model it started from
    train: TrainSettings  # its own, but the epochs (each stage's: `fit_stage`)


def run_point(
    unit: Artifact,
    spec: PointSpec,
    home: Path,
    tok: TokenizerLike,
    log: LogFn | None = None,
    run_id: str | None = None,
) -> TrainedUnit:
    """Fine-tune and evaluate one grid point into `unit`; returns its manifest (`run_id`: the
    MLflow run it logs to, named there).

    A one-stage task's point (`PointSpec`) trains its one stage from the pre-trained
    checkpoint. A stage unit (`StageSpec`) trains its stage only, from the pre-trained
    checkpoint or the saved best state of the stage unit it starts from, on the labels of its
    labels unit when the stage's items are unlabelled; a stage before the last one saves its
    best state and its best dev metric (no test), the last one is evaluated like a point.
    A unit that is already done is returned as it is: a finished point is never re-trained.
    """
    if unit.done():
        return TRAINED.validate_python(unit.manifest())
    unit.ensure()
    log = log or _no_log
    run = build(spec, home, tok)
    records, last = fit_stages(run, home, tok, log, unit)
    described = describe(run, records, run_id)
    if not run.evaluated:
        return write_stage_unit(unit, run, described, last)
    scores = predict_point(run, tok, last)
    log(dict(scores.metrics), described["steps"])
    return write_point(unit, run, described, scores)


def _no_log(metrics: dict[str, float], step: int) -> None:
    pass


def build(spec: PointSpec, home: Path, tok: TokenizerLike) -> PointRun:
    """Load what the unit trains: its starting model and its splits, encoded within the
    task's budget, and the trainer's settings (all read from the spec's keyed settings)."""
    shared, task = spec.shared_settings, spec.task_plugin()
    data_dir = home / spec.data_dir
    info, splits = load_prepared(data_dir)
    schedule = schedule_of(info)
    stages, evaluated = spec.trains(schedule), spec.evaluated(schedule)
    model, loaded = start_model(spec, home, task.settings.prompt_tokens, pick_device(shared.device))
    budget = data_budget(shared, task, tok, schedule, splits, model.block_size)
    needed = {name for st in stages for name in (st.train, st.dev)}
    needed |= {"dev", "test"} if evaluated else set()
    token_hash = getattr(tok, "hash", None)
    data = {
        name: encode_examples(
            tok, exs, budget.source, load_token_ids(data_dir, name, token_hash, info)
        )
        for name, exs in splits.items()
        if name in needed
    }
    # Early stopping needs a mode the task supports (generation always is).
    early = shared.early_stop_on if shared.early_stop_on in task.modes else "generate"
    train = settings_for(shared, spec.batch_size, spec.lr, spec.seed, budget.max_new, early)
    return PointRun(spec, task, model, stages, evaluated, data, budget, loaded, train)


def start_model(
    spec: PointSpec, home: Path, n_prompt: int, device: torch.device
) -> tuple[PromptedLM, dict[str, int]]:
    """The model the unit starts from: the saved best state of the unit it follows (its
    weights were reactivated there), or the pre-trained checkpoint, densified."""
    start = spec.start_unit()
    if not start:
        return load_pretrained(home / spec.checkpoint, n_prompt, spec.seed, device)
    model = load_finetuned(home / start / "checkpoint", device)
    before = TRAINED.validate_json((home / start / MANIFEST).read_bytes())
    params = sum(p.numel() for p in model.parameters())
    return model, {"reactivated": before.reactivated_weights, "params": params}


def fit_stages(
    run: PointRun, home: Path, tok: TokenizerLike, log: LogFn, unit: Artifact
) -> tuple[list[StageRecord], FitResult]:
    """Train the unit's stages in order, each from the best state of the one before; the
    stages' records and the last stage's fit. Several stages log under their names, on one
    step axis."""
    records: list[StageRecord] = []
    offset = 0
    for stage in run.stages:
        prefix = f"{stage.name}/" if len(run.stages) > 1 else ""
        last, record = fit_stage(run, stage, home, tok, shifted(log, prefix, offset), unit)
        offset += last.steps
        records.append(record)
    return records, last


def shifted(log: LogFn, prefix: str, offset: int) -> LogFn:
    """`log` with metric names under `prefix` and steps after `offset`."""
    return lambda metrics, step: log({prefix + k: v for k, v in metrics.items()}, offset + step)


def fit_stage(
    run: PointRun, stage: Stage, home: Path, tok: TokenizerLike, log: LogFn, unit: Artifact
) -> tuple[FitResult, StageRecord]:
    """Train one stage (on its pseudo labels when its items are unlabelled) and keep its best
    state in the model."""
    labels = None
    if stage.pseudo_label:
        run.data[stage.train], labels = pseudo_labelled(run, stage, home, tok)
    train, dev = run.data[stage.train], run.data[stage.dev]
    settings = replace(run.train, epochs=run.task.stage_epochs(stage.name))  # the recipe's
    try:
        result = fit(run.model, run.task, tok, train, dev, settings, log)
    except NonFiniteLoss as e:  # name the unit: it is left without a manifest
        raise NonFiniteLoss(f"unit {unit.path}: {e}") from None
    run.model.load_state_dict(result.best_state)  # what the unit keeps: the best state
    record = StageRecord(
        name=stage.name,
        train=len(train),
        dev=len(dev),
        best_epoch=result.best_epoch,
        best_dev=result.best_dev,
        steps=result.steps,
        stopped_early=result.stopped_early,
        history=result.history,
        pseudo_labels=labels,
    )
    return result, record


def pseudo_labelled(
    run: PointRun, stage: Stage, home: Path, tok: TokenizerLike
) -> tuple[list[Encoded], dict[str, int]]:
    """The stage's training items with the labels its labels unit predicted."""
    labels_dir = run.spec.labels_unit()
    if not labels_dir:
        raise ValueError(
            f"{run.spec.task}: stage {stage.name} trains on pseudo labels, but the unit names "
            "no labels unit"
        )
    return apply_labels(run.task, tok, run.data[stage.train], read_labels(home / labels_dir))


def describe(run: PointRun, records: list[StageRecord], run_id: str | None) -> dict[str, Any]:
    """What every training unit's manifest says about it besides its scores."""
    spec, task = run.spec, run.task
    return dict(
        mlflow_run_id=run_id,
        variant=spec.variant,
        task=task.name,
        metric=task.metric_name,
        **spec.chain(),
        batch_size=spec.batch_size,
        lr=spec.lr,
        seed=spec.seed,
        n_prompt=task.settings.prompt_tokens,
        max_len=run.budget.max_len,
        source_budget=run.budget.source,
        max_new_tokens=run.budget.max_new,
        reactivated_weights=run.loaded["reactivated"],
        params=run.loaded["params"],
        stages=records,
        steps=sum(r.steps for r in records),
    )


def predict_point(run: PointRun, tok: TokenizerLike, last: FitResult) -> Scores:
    """Score the kept state on dev and test in every mode of the unit."""
    s, out = run.train, Scores()
    # Early stopping predicted dev in its mode at the best epoch, from the state the unit keeps,
    # in the same batches: predicting it again would give the same labels (a whole dev pass).
    known = {("dev", s.early_stop_on): last.best_predictions} if run.stages[-1].dev == "dev" else {}
    for mode in run.spec.modes:
        for split in ("dev", "test"):
            preds, texts = known.get((split, mode), ([], []))
            if not preds:
                examples = run.data[split]
                preds, texts = predict(
                    run.model, run.task, tok, examples, mode, s.eval_batch_size, s.max_new_tokens
                )
            score_split(out, run.task, run.data[split], split, mode, preds, texts)
    return out


def write_stage_unit(
    unit: Artifact, run: PointRun, described: dict[str, Any], last: FitResult
) -> StageUnitManifest:
    """An earlier stage's unit: its best state starts the next stage's units, its best dev
    metric (the early-stopping mode's) chooses among its grid. No test set is looked at. Its
    dev predictions at the best epoch are flagged as the last stage's are, so the grid of its
    stage does not pass a collapsed model on (`grid.choose`)."""
    early = run.train.early_stop_on
    save_finetuned(unit.path / "checkpoint", run.model)
    result = StageUnitManifest(
        **described,
        metrics={f"dev_{early}": last.best_dev},
        degenerate=dev_flags(last.best_predictions[0], early),
        checkpoint="checkpoint",
    )
    return write_unit(unit, result)


def write_point(
    unit: Artifact, run: PointRun, described: dict[str, Any], scores: Scores
) -> PointManifest:
    """An evaluated unit: its predictions (one file per mode), best state and manifest."""
    for mode, rows in scores.rows.items():
        text = "".join(json.dumps(r) + "\n" for r in rows)
        write_atomic(unit.path / predictions_file(mode), text)
    save_finetuned(unit.path / "checkpoint", run.model)
    return write_unit(unit, scores.manifest(described, run.spec.modes))


R = TypeVar("R", bound=BaseModel)


def write_unit(unit: Artifact, result: R) -> R:
    """`metrics.json`, then the manifest (last: the unit is done); the result as read back."""
    body = unit_json(result)
    write_atomic(unit.path / "metrics.json", json.dumps(body, indent=2) + "\n")
    return type(result).model_validate(unit.write_manifest(body))


def dev_flags(preds: list[Any], mode: str) -> dict[str, str]:
    """{"dev_<mode>": why} when the dev predictions are degenerate (`stats.degenerate`), else
    {}; no predictions (no epoch evaluated) flag nothing: there is nothing to judge."""
    why = degenerate(preds) if preds else None
    return {f"dev_{mode}": why} if why else {}


def run_labels(unit: Artifact, spec: LabelSpec, home: Path, tok: TokenizerLike) -> LabelsManifest:
    """Pseudo-label split `spec.split` with the labeller unit's saved best model (constrained
    scoring when the task has it: every item gets a valid label) into `labels.jsonl`; returns
    the unit's manifest (a done unit as it is)."""
    if unit.done():
        return LabelsManifest.model_validate(unit.manifest())
    unit.ensure()
    shared, task = spec.shared_settings, spec.task_plugin()
    data_dir = home / spec.data_dir
    info, splits = load_prepared(data_dir)
    model = load_finetuned(home / spec.labeller_dir / "checkpoint", pick_device(shared.device))
    budget = data_budget(shared, task, tok, schedule_of(info), splits, model.block_size)
    ids = load_token_ids(data_dir, spec.split, getattr(tok, "hash", None), info)
    data = encode_examples(tok, splits[spec.split], budget.source, ids)
    labelled, counts = pseudo_label(model, task, tok, data, shared.eval_batch_size)
    rows = [json.dumps({"id": e.id, "label": label_to_json(e.label)}) + "\n" for e in labelled]
    write_atomic(unit.path / LABELS_FILE, "".join(rows))
    result = LabelsManifest(
        task=task.name,
        variant=spec.variant,
        seed=spec.seed,
        split=spec.split,
        labeller=spec.labeller_dir,
        mode="score" if "score" in task.modes else "generate",
        items=len(data),
        labelled=len(labelled),
        counts=counts,
        # A labeller that gives every item one label (or none) teaches the next stage a constant.
        degenerate=degenerate([e.label for e in labelled]),
        labels=LABELS_FILE,
    )
    return LabelsManifest.model_validate(unit.write_manifest(unit_json(result, drop_unset=False)))
