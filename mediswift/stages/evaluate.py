"""The evaluate stage: one table per downstream task (the paper's Tables 3 and 4 for PubMedQA
and HoC), and the metric against pre-training FLOPs.

For every (variant, task) sweep of the finetune stage it picks the (batch, lr) with the best mean
dev metric over seeds, per prediction mode, and reports the test metric's mean and std over the
seeds there, beside the majority-class baseline, and the task's extra metrics (HoC in
BioGPT's convention) at the same choice. Everything goes into the stage output and one
MLflow run (`evaluate` in the fine-tuning experiment); the selected numbers are also logged on
each sweep's parent run.

Each sweep also stands for one point, chosen as `mediswift export` chooses it
(`mediswift.export_select`: the plot mode's (batch, lr), its best seed on dev). That point's
run gets an MLflow model, registered as `mediswift-<variant>-<task>` with the aliases
`selected` and `recipe-<recipe>`, and the sweep's parent run is tagged with it and its settings.

Like vocab, the stage is one unit: its output itself, keyed by the stage key (the finetune and
pretrain outputs it reads and the evaluate settings); registrations are MLflow side effects that
a re-run repeats harmlessly (a new version, the aliases moved).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediswift import manifests
from mediswift.artifacts import Artifact, unit_at
from mediswift.config import PipelineConfig
from mediswift.export_select import ExportChoice, choose
from mediswift.finetune.keys import SPEC_FILE, PointSpec, read_spec
from mediswift.manifests import (
    EvaluatedSweep,
    EvaluateManifest,
    FinetuneManifest,
    ModelRegistration,
    SelectedPoint,
)
from mediswift.names import model_name
from mediswift.stage_def import StageDef
from mediswift.tracking import Tracker, recipe_alias, resolve_tracking_uri

# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs.
# 4: a task's extra metrics (HoC in BioGPT's convention) beside each selection.
STAGE = StageDef("evaluate", inputs=("finetune", "pretrain"), manifest=EvaluateManifest, version=4)

SELECTED_ALIAS = "selected"
EXAMPLE_CHARS = 100  # an input example short enough for the smallest context


def check_modes(cfg: PipelineConfig, finetune: FinetuneManifest) -> list[str]:
    modes = list(cfg.evaluate.predictions)
    missing = [m for m in modes if m not in finetune.modes]
    if missing:
        raise RuntimeError(f"the finetune output has no {missing} predictions: re-run finetune")
    return modes


def log_to_mlflow(
    cfg: PipelineConfig, home: Path, folder: Path, report: EvaluateManifest, tags: dict[str, str]
) -> str:
    """The selected numbers on each sweep's parent run, and the evaluate run with the tables."""
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    tracker = Tracker(uri, cfg.tracking.finetune_experiment, artifact_root=home / "mlruns")
    for r in report.results:
        if not r.parent_run_id:
            continue
        metrics = {f"selected_test_{m}_mean": s.test_mean for m, s in r.selected.items()}
        metrics |= {f"selected_test_{m}_std": s.test_std for m, s in r.selected.items()}
        metrics |= extra_metrics(r)
        metrics["majority_test"] = r.majority_test
        with tracker.run(f"{r.variant}-{r.task}", run_id=r.parent_run_id) as parent:
            parent.log_metrics(metrics, step=0)
            parent.set_tags(selection_tags(r))
    with tracker.run("evaluate", tags={"mediswift.kind": "evaluate", **tags}) as run:
        for r in report.results:
            for m, s in r.selected.items():
                run.log_metrics({f"{r.variant}.{r.task}.{m}.test_mean": s.test_mean}, 0)
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name != "manifest.json":
                run.log_artifact(path, "evaluate")
    return run.run_id


def extra_metrics(r: EvaluatedSweep) -> dict[str, float]:
    """The task's extra test metrics (e.g. HoC in BioGPT's convention) of every mode's choice,
    named like the main ones with the metric's name after the mode."""
    out = {}
    for m, s in r.selected.items():
        for name, e in s.extra_metrics.items():
            out[f"selected_test_{m}_{name}_mean"] = e.test_mean
            out[f"selected_test_{m}_{name}_std"] = e.test_std
    return out


def selection_tags(r: EvaluatedSweep) -> dict[str, str]:
    """The parent's tags naming its selected child run and that point's settings, and the
    (batch, lr) chosen in every prediction mode."""
    tags = {}
    for mode, s in r.selected.items():
        tags[f"mediswift.selected.{mode}.batch_size"] = str(s.batch_size)
        tags[f"mediswift.selected.{mode}.lr"] = f"{s.lr:g}"
    p = r.selected_point
    if p is not None:
        fields = {"mode": p.mode, "batch_size": p.batch_size, "lr": f"{p.lr:g}", "seed": p.seed}
        fields |= {"unit": p.unit, "run_id": p.mlflow_run_id, "model": p.registered_model}
        tags |= {f"mediswift.selected.{k}": str(v) for k, v in fields.items() if v is not None}
    return tags


def select_points(
    cfg: PipelineConfig, home: Path, inputs: dict[str, Artifact], report: EvaluateManifest
) -> dict[tuple[str, str], ExportChoice]:
    """Set each sweep's `selected_point` (the point `mediswift export` would write out);
    returns the export choice of each (variant, task)."""
    finetune = manifests.read(inputs["finetune"], FinetuneManifest)
    arts = {"pretrain": inputs["pretrain"], "finetune": inputs["finetune"]}
    choices = {}
    for r in report.results:
        choice = choose(home, arts, r.variant, r.task, cfg.evaluate.plot_mode, cfg.pretrain.seq_len)
        pt = choice.card["point"]
        sweep = next(s for s in finetune.sweeps if (s.variant, s.task) == (r.variant, r.task))
        best = next(
            p
            for p in sweep.points
            if (p.batch_size, p.lr, p.seed) == (pt["batch_size"], pt["lr"], pt["seed"])
        )
        r.selected_point = SelectedPoint(
            mode=pt["mode"],
            batch_size=best.batch_size,
            lr=best.lr,
            seed=best.seed,
            unit=best.unit,
            mlflow_run_id=best.mlflow_run_id,
        )
        choices[(r.variant, r.task)] = choice
    return choices


@dataclass
class Registration:
    """What registering one sweep's selected point needs (`tasks.tracking.register_model`)."""

    sweep: EvaluatedSweep
    model: ModelRegistration


def console_summary(cfg: PipelineConfig, home: Path, report: EvaluateManifest) -> str:
    """The results, one line per task, in the mode the figures draw (`tables.summary`)."""
    from mediswift.finetune.tables import summary
    from mediswift.report import report_dir

    where = report_dir(home, cfg.name) / "report.html"
    return summary(report.results, cfg.evaluate.plot_mode, str(where))


def registrations(
    cfg: PipelineConfig,
    home: Path,
    report: EvaluateManifest,
    choices: dict[tuple[str, str], ExportChoice],
    warn: Any,
) -> list[Registration]:
    """The model of every sweep's selected point, to log and register in its own run (the
    aliases move to the newest selection); a sweep without a run or unit spec is warned of."""
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    out = []
    for r in report.results:
        p = r.selected_point
        unit = unit_at(home, "finetune", Path(p.unit).name) if p else None
        if p is None or not p.mlflow_run_id or not (unit.path / SPEC_FILE).is_file():
            warn("evaluate: %s-%s: no run or unit spec to log a model from", r.variant, r.task)
            continue
        spec = read_spec(unit, PointSpec)
        choice = choices[(r.variant, r.task)]
        base = choice.card.pop("registered_model", None)  # the pre-trained version
        card = {
            **choice.card,
            **({"base_model": base} if base else {}),
            "recipe": cfg.name,
            "pmc_commercial_only": cfg.download.pmc_commercial_only,
            "mlflow_run_id": p.mlflow_run_id,
        }
        model = ModelRegistration(
            tracking_uri=uri,
            run_id=p.mlflow_run_id,
            name=model_name(r.variant, r.task),
            checkpoint=str(choice.checkpoint),
            tokenizer_dir=str(home / spec.tokenizer_dir),
            card=card,
            prompt=str(choice.prompt) if choice.prompt and choice.prompt.is_file() else None,
            trained_len=choice.trained_len,
            source_budget=choice.source_budget,
            max_new_tokens=choice.max_new_tokens,
            input_example=input_example(home / spec.data_dir),
            aliases=[SELECTED_ALIAS, recipe_alias(cfg.name)],
            tags=version_tags(cfg, r, p),
            description=(
                f"{r.variant} fine-tuned on {r.task} at batch {p.batch_size}, lr {p.lr:g}, "
                f"seed {p.seed}: the point the evaluation selected ({p.mode} mode) in recipe "
                f"{cfg.name}. The model carries its soft prompt and generates as evaluated "
                "(its code is logged with it: transformers loads it with trust_remote_code)."
            ),
        )
        out.append(Registration(r, model))
    return out


def version_tags(cfg: PipelineConfig, r: EvaluatedSweep, p: SelectedPoint) -> dict[str, str]:
    tags = {
        "mediswift.variant": r.variant,
        "mediswift.task": r.task,
        "mediswift.recipe": cfg.name,
        "mediswift.unit": Path(p.unit).name,
        "mode": p.mode,
        "batch_size": str(p.batch_size),
        "lr": f"{p.lr:g}",
        "seed": str(p.seed),
    }
    if p.mode in r.selected:
        tags[f"test_{r.metric}_mean"] = f"{r.selected[p.mode].test_mean:.4f}"
    if r.parent_run_id:
        tags["mediswift.sweep_run_id"] = r.parent_run_id
    return tags


def input_example(data_dir: Path) -> str:
    """The start of the task's first test source: what the fine-tuned model reads."""
    with open(data_dir / "test.jsonl", encoding="utf-8") as f:
        source = json.loads(f.readline())["source"]
    return source[:EXAMPLE_CHARS].rsplit(" ", 1)[0] if len(source) > EXAMPLE_CHARS else source
