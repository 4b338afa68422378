"""The evaluate stage: one table per downstream task (the paper's Tables 3 and 4 for PubMedQA
and HoC), and the metric against pre-training FLOPs.

For every (variant, task) sweep of the finetune stage it picks the (batch, lr) with the best mean
dev metric over seeds, per prediction mode, and reports the test metric's mean and std over the
seeds there, beside the majority-class baseline. Everything goes into the stage artifact and one
MLflow run (`evaluate` in the fine-tuning experiment); the selected numbers are also logged on
each sweep's parent run. Both tables are printed.

Manifest: `mediswift.manifests.EvaluateManifest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import EvaluateManifest, FinetuneManifest, PretrainManifest
from mediswift.tracking import Tracker, resolve_tracking_uri
from tasks import evaluate as t
from tasks.tracking import flow_run_tags


def log_to_mlflow(cfg: PipelineConfig, home: Path, folder: Path, report: EvaluateManifest) -> str:
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    tracker = Tracker(uri, cfg.tracking.finetune_experiment, artifact_root=home / "mlruns")
    tags = flow_run_tags()
    for r in report.results:
        if not r.parent_run_id:
            continue
        metrics = {f"selected_test_{m}_mean": s.test_mean for m, s in r.selected.items()}
        metrics |= {f"selected_test_{m}_std": s.test_std for m, s in r.selected.items()}
        metrics["majority_test"] = r.majority_test
        with tracker.run(f"{r.variant}-{r.task}", run_id=r.parent_run_id) as parent:
            parent.log_metrics(metrics, step=0)
    with tracker.run("evaluate", tags={"mediswift.kind": "evaluate", **tags}) as run:
        for r in report.results:
            for m, s in r.selected.items():
                run.log_metrics({f"{r.variant}.{r.task}.{m}.test_mean": s.test_mean}, 0)
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.name != "manifest.json":
                run.log_artifact(path, "evaluate")
    return run.run_id


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    finetune = manifests.read(inputs["finetune"], FinetuneManifest)
    pretrain = manifests.read(inputs["pretrain"], PretrainManifest)
    modes = list(cfg.evaluate.predictions)
    missing = [m for m in modes if m not in finetune.modes]
    if missing:
        raise RuntimeError(f"the finetune output has no {missing} predictions: re-run finetune")
    out.ensure()
    report, texts = t.evaluate_report.submit(
        key=out.key,
        finetune=finetune,
        pretrain=pretrain,
        modes=modes,
        plot_mode=cfg.evaluate.plot_mode,
        out_dir=str(out.path),
        home=str(home),
    ).result()
    for text in texts.values():
        print(text)
    report.mlflow_run_id = log_to_mlflow(cfg, home, out.path, report)
    log.info("evaluate: tables and plot in %s (MLflow run %s)", out.path, report.mlflow_run_id)
    return manifests.write(out, report)
