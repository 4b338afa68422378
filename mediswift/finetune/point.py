"""One grid point: a (variant, task, batch size, learning rate, seed) fine-tune, end to end.

Load the pre-trained checkpoint strictly and drop its masks: the weights they held inactive
start at zero (they are zero in a sparse checkpoint already; `reactivate` makes sure) and train
densely with fresh AdamW state (Section 2.2.1). Then train the task's stage (a multi-stage
schedule's stage unit trains its own stage, from the saved best state of the unit it starts
from when the stage has one: `mediswift.finetune.schedule`), evaluate the best state on dev
and test in both prediction modes, and write the unit: `checkpoint/` (model.safetensors +
config.json as `mediswift.train.checkpoint` lays them out, plus `prompt.safetensors`),
`metrics.json`, `predictions_<mode>.jsonl`, and `manifest.json` last. An earlier stage's unit
writes `checkpoint/`, `metrics.json` (its best dev metric) and `manifest.json` only; a labels
unit (`run_labels`) writes `labels.jsonl`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mediswift.artifacts import Artifact, tmp_path, write_atomic
from mediswift.finetune.datasets import load_prepared, load_token_ids
from mediswift.finetune.formats import label_from_json, label_to_json
from mediswift.finetune.keys import LabelSpec, PointSpec
from mediswift.finetune.scoring import (
    Encoded,
    TokenizerLike,
    encode_examples,
    max_target_tokens,
    predict,
    source_budget,
)
from mediswift.finetune.settings import FinetuneConfig
from mediswift.finetune.stats import degenerate
from mediswift.finetune.trainer import LogFn, TrainSettings, fit
from mediswift.model.gpt import GPT
from mediswift.model.soft_prompt import PromptedLM
from mediswift.train.checkpoint import load_masks, load_model, save_checkpoint
from mediswift.train.finite import NonFiniteLoss

PROMPT_FILE = "prompt.safetensors"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@torch.no_grad()
def reactivate(lm: GPT, masks: dict[str, torch.Tensor]) -> int:
    """Drop the masks: every masked weight starts at exactly zero and is trainable from now on.

    Returns how many weights were reactivated.
    """
    params = dict(lm.named_parameters())
    n = 0
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"mask for {name!r}, which the model does not have")
        p = params[name]
        if mask.shape != p.shape:
            raise ValueError(
                f"mask for {name} has shape {tuple(mask.shape)}, weight {tuple(p.shape)}"
            )
        p.mul_(mask.to(p.device, p.dtype))
        n += int((~mask.bool()).sum())
    return n


def load_pretrained(
    checkpoint: Path, n_prompt_tokens: int, seed: int, device: torch.device | str = "cpu"
) -> tuple[PromptedLM, dict[str, int]]:
    """A dense PromptedLM from a (possibly sparse) pre-training checkpoint."""
    lm = load_model(checkpoint, device)
    reactivated = reactivate(lm, load_masks(checkpoint))
    model = PromptedLM(lm, n_prompt_tokens).to(device)
    model.prompt.init_from_vocab(lm.wte, torch.Generator().manual_seed(seed))
    return model, {"reactivated": reactivated, "params": sum(p.numel() for p in model.parameters())}


def save_finetuned(path: Path, model: PromptedLM) -> Path:
    save_checkpoint(path, model.lm)
    tmp = tmp_path(path / PROMPT_FILE)
    save_file({"weight": model.prompt.weight.detach().cpu().contiguous()}, str(tmp))
    tmp.replace(path / PROMPT_FILE)
    return path


def load_finetuned(path: Path, device: torch.device | str = "cpu") -> PromptedLM:
    """A fine-tuned checkpoint written by `save_finetuned` (strict, no pickle)."""
    lm = load_model(path, device)
    weight = load_file(str(Path(path) / PROMPT_FILE))["weight"]
    model = PromptedLM(lm, weight.shape[0]).to(device)
    with torch.no_grad():
        model.prompt.weight.copy_(weight)
    return model


def pseudo_label(
    model: PromptedLM,
    task: Any,
    tok: TokenizerLike,
    data: list[Encoded],
    batch_size: int,
) -> tuple[list[Encoded], dict[str, int]]:
    """Label unlabelled examples with the model as it stands (constrained scoring when the task
    has it: every item gets a valid label), as a labels unit labels PQA-U with its labeller
    (`run_labels`). Returns the labelled examples and the label counts."""
    mode = "score" if "score" in task.modes else "generate"
    preds, _ = predict(model, task, tok, data, mode, batch_size)
    out, counts = [], Counter()
    for e, p in zip(data, preds, strict=True):
        if p is None:
            continue  # a generation that names no label teaches nothing
        counts[json.dumps(label_to_json(p))] += 1
        out.append(Encoded(e.id, e.source, tok.encode(task.target(p)) + [tok.eos_id], p))
    return out, dict(counts)


def settings_for(
    cfg: FinetuneConfig, batch_size: int, lr: float, seed: int, max_new: int, early_stop_on: str
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


def apply_labels(
    task: Any, tok: TokenizerLike, data: list[Encoded], labels: dict[str, Any]
) -> tuple[list[Encoded], dict[str, int]]:
    """The unlabelled examples given the labels a labels unit predicted for them (by id);
    examples it left unlabelled are dropped. Returns them and the label counts."""
    out, counts = [], Counter()
    for e in data:
        if e.id not in labels:
            continue
        label = labels[e.id]
        counts[json.dumps(label_to_json(label))] += 1
        out.append(Encoded(e.id, e.source, tok.encode(task.target(label)) + [tok.eos_id], label))
    return out, dict(counts)


LABELS_FILE = "labels.jsonl"


def read_labels(unit_dir: Path) -> dict[str, Any]:
    """Id -> label of a labels unit (`run_labels`)."""
    rows = (Path(unit_dir) / LABELS_FILE).read_text().splitlines()
    return {r["id"]: label_from_json(r["label"]) for r in map(json.loads, rows)}


def data_budget(
    cfg: FinetuneConfig,
    task: Any,
    tok: TokenizerLike,
    info: dict[str, Any],
    splits: dict[str, list[Any]],
    block_size: int,
) -> tuple[int, int, int]:
    """(context length, source budget, generation bound) of a task's prepared data: the same
    for every unit of the task, whatever stage it trains or labels."""
    max_len = min(cfg.max_len, block_size)
    train_targets = sorted({e.target for st in info["stages"] for e in splits[st["train"]]})
    targets = task.budget_targets(train_targets)
    n = task.settings.prompt_tokens
    return (
        max_len,
        source_budget(tok, targets, n, max_len, task.name),
        max_target_tokens(tok, targets),
    )


def run_point(
    unit: Artifact,
    spec: PointSpec,
    home: Path,
    tok: TokenizerLike,
    log: LogFn | None = None,
    describe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune and evaluate one grid point into `unit`; returns its manifest.

    A one-stage task's point (`PointSpec`) trains its one stage from the pre-trained
    checkpoint. A stage unit (`StageSpec`) trains its stage only, from the pre-trained
    checkpoint or the saved best state of the stage unit it starts from, on the labels of its
    labels unit when the stage's items are unlabelled; a stage before the last one saves its
    best state and its best dev metric (no test), the last one is evaluated like a point.
    A unit that is already done is returned as it is: a finished point is never re-trained.
    """
    if unit.done():
        return unit.manifest()
    unit.ensure()
    log = log or (lambda metrics, step: None)
    cfg = FinetuneConfig.model_validate(spec.settings)
    task = cfg.task(spec.task)
    device = pick_device(cfg.device)
    data_dir = home / spec.data_dir
    info, splits = load_prepared(data_dir)
    phase = getattr(spec, "phase", None)
    if phase is None:
        if len(info["stages"]) > 1:
            raise ValueError(
                f"{spec.task}: its data has a schedule of {len(info['stages'])} stages, which "
                "are trained as stage units (StageSpec), not as one grid point"
            )
        stages = info["stages"]
    else:
        stages = [st for st in info["stages"] if st["name"] == phase]
        if not stages:
            raise ValueError(f"{spec.task}: its data has no stage {phase!r}")
    final = phase is None or phase == info["stages"][-1]["name"]
    n = task.settings.prompt_tokens
    start = getattr(spec, "start", "")
    if start:
        model = load_finetuned(home / spec.start_dir / "checkpoint", device)
        before = json.loads((home / spec.start_dir / "manifest.json").read_text())
        load_info = {
            "reactivated": before["reactivated_weights"],
            "params": sum(p.numel() for p in model.parameters()),
        }
    else:
        model, load_info = load_pretrained(home / spec.checkpoint, n, spec.seed, device)
    max_len, budget, max_new = data_budget(cfg, task, tok, info, splits, model.block_size)
    needed = {st[k] for st in stages for k in ("train", "dev")} | (
        {"dev", "test"} if final else set()
    )
    enc = {
        name: encode_examples(
            tok, exs, budget, load_token_ids(data_dir, name, getattr(tok, "hash", None), info)
        )
        for name, exs in splits.items()
        if name in needed
    }
    # Early stopping needs a mode the task supports (generation always is).
    early = cfg.early_stop_on if cfg.early_stop_on in task.modes else "generate"
    train = settings_for(cfg, spec.batch_size, spec.lr, spec.seed, max_new, early)

    record, offset = [], 0
    for stage in stages:
        prefix = f"{stage['name']}/" if len(stages) > 1 else ""

        def stage_log(
            metrics: dict[str, float], step: int, p: str = prefix, o: int = offset
        ) -> None:
            log({p + k: v for k, v in metrics.items()}, o + step)

        labels_made = None
        if stage.get("pseudo_label"):
            labels_dir = getattr(spec, "labels_dir", "")
            if not labels_dir:
                raise ValueError(
                    f"{spec.task}: stage {stage['name']} trains on pseudo labels, but the unit "
                    "names no labels unit"
                )
            enc[stage["train"]], labels_made = apply_labels(
                task, tok, enc[stage["train"]], read_labels(home / labels_dir)
            )
        try:
            result = fit(
                model,
                task,
                tok,
                enc[stage["train"]],
                enc[stage["dev"]],
                replace(train, epochs=task.stage_epochs(stage["name"])),  # the recipe's
                stage_log,
            )
        except NonFiniteLoss as e:  # name the unit: it is left without a manifest
            raise NonFiniteLoss(f"unit {unit.path}: {e}") from None
        model.load_state_dict(result.best_state)  # what the unit keeps: the best state
        offset += result.steps
        record.append(
            {
                "name": stage["name"],
                "train": len(enc[stage["train"]]),
                "dev": len(enc[stage["dev"]]),
                "best_epoch": result.best_epoch,
                "best_dev": result.best_dev,
                "steps": result.steps,
                "stopped_early": result.stopped_early,
                "history": result.history,
                **({"pseudo_labels": labels_made} if labels_made is not None else {}),
            }
        )
    chain = (
        {
            "phase": phase,
            "start": getattr(spec, "start_dir", "") or spec.checkpoint,
            **({"labels": spec.labels_dir} if getattr(spec, "labels_dir", "") else {}),
        }
        if phase is not None
        else {}
    )
    common = {
        **(describe or {}),
        "variant": spec.variant,
        "task": task.name,
        "metric": task.metric_name,
        **chain,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "seed": spec.seed,
        "n_prompt": n,
        "max_len": max_len,
        "source_budget": budget,
        "max_new_tokens": max_new,
        "reactivated_weights": load_info["reactivated"],
        "params": load_info["params"],
        "stages": record,
        "steps": offset,
    }
    if not final:
        # An earlier stage: its best state starts the next stage's units, its best dev metric
        # (the early-stopping mode's) chooses among its grid. No test set is looked at. Its
        # dev predictions at the best epoch are flagged as the last stage's are, so the grid
        # of its stage does not pass a collapsed model on (`grid.choose`).
        save_finetuned(unit.path / "checkpoint", model)
        manifest = {
            **common,
            "metrics": {f"dev_{early}": record[-1]["best_dev"]},
            "degenerate": dev_flags(result.best_predictions[0], early),
            "checkpoint": "checkpoint",
        }
        write_atomic(unit.path / "metrics.json", json.dumps(manifest, indent=2) + "\n")
        return unit.write_manifest(manifest)

    metrics: dict[str, Any] = {}
    unparsed: dict[str, int] = {}  # generated sentences that name no label (counted wrong)
    flags: dict[str, str] = {}  # <split>_<mode> -> why the predictions are degenerate
    # Early stopping predicted dev in its mode at the best epoch, from the state the unit keeps,
    # in the same batches: predicting it again would give the same labels (a whole dev pass).
    known = {("dev", early): result.best_predictions} if stages[-1]["dev"] == "dev" else {}
    for mode in spec.modes:
        for split in ("dev", "test"):
            preds, texts = known.get((split, mode), ([], []))
            if not preds:
                preds, texts = predict(
                    model, task, tok, enc[split], mode, cfg.eval_batch_size, max_new
                )
            golds = [e.label for e in enc[split]]
            metrics[f"{split}_{mode}"] = task.metric(preds, golds)
            metrics |= {f"{split}_{mode}_{k}": v for k, v in task.scores(preds, golds).items()}
            if mode == "generate":
                unparsed[split] = preds.count(None)
            if why := degenerate(preds):
                flags[f"{split}_{mode}"] = why
            rows = [
                {
                    "id": e.id,
                    "split": split,
                    "gold": label_to_json(e.label),
                    "pred": label_to_json(p),
                    **({"text": t} if texts else {}),
                }
                for e, p, t in zip(enc[split], preds, texts or [""] * len(preds), strict=True)
            ]
            with open(
                unit.path / f"predictions_{mode}.jsonl", "a" if split == "test" else "w"
            ) as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    log({k: v for k, v in metrics.items()}, offset)
    save_finetuned(unit.path / "checkpoint", model)
    manifest = {
        **common,
        "metrics": metrics,
        "unparsed_generations": unparsed,
        "degenerate": flags,
        "checkpoint": "checkpoint",
        "predictions": {m: f"predictions_{m}.jsonl" for m in spec.modes},
    }
    write_atomic(unit.path / "metrics.json", json.dumps(manifest, indent=2) + "\n")
    return unit.write_manifest(manifest)


def dev_flags(preds: list[Any], mode: str) -> dict[str, str]:
    """{"dev_<mode>": why} when the dev predictions are degenerate (`stats.degenerate`), else
    {}; no predictions (no epoch evaluated) flag nothing: there is nothing to judge."""
    why = degenerate(preds) if preds else None
    return {f"dev_{mode}": why} if why else {}


def run_labels(unit: Artifact, spec: LabelSpec, home: Path, tok: TokenizerLike) -> dict[str, Any]:
    """Pseudo-label split `spec.split` with the labeller unit's saved best model (constrained
    scoring when the task has it: every item gets a valid label) into `labels.jsonl`; returns
    the unit's manifest (a done unit as it is)."""
    if unit.done():
        return unit.manifest()
    unit.ensure()
    cfg = FinetuneConfig.model_validate(spec.settings)
    task = cfg.task(spec.task)
    data_dir = home / spec.data_dir
    info, splits = load_prepared(data_dir)
    model = load_finetuned(home / spec.labeller_dir / "checkpoint", pick_device(cfg.device))
    _, budget, _ = data_budget(cfg, task, tok, info, splits, model.block_size)
    ids = load_token_ids(data_dir, spec.split, getattr(tok, "hash", None), info)
    data = encode_examples(tok, splits[spec.split], budget, ids)
    labelled, counts = pseudo_label(model, task, tok, data, cfg.eval_batch_size)
    # A labeller that gives every item one label (or none) teaches the next stage a constant.
    why = degenerate([e.label for e in labelled])
    rows = [json.dumps({"id": e.id, "label": label_to_json(e.label)}) + "\n" for e in labelled]
    write_atomic(unit.path / LABELS_FILE, "".join(rows))
    return unit.write_manifest(
        {
            "task": task.name,
            "variant": spec.variant,
            "seed": spec.seed,
            "split": spec.split,
            "labeller": spec.labeller_dir,
            "mode": "score" if "score" in task.modes else "generate",
            "items": len(data),
            "labelled": len(labelled),
            "counts": counts,
            "degenerate": why,
            "labels": LABELS_FILE,
        }
    )
