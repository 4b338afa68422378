"""The finetune stage: every pre-trained variant x downstream task x grid point (batch, lr, seed).

Plan units, submit, collect, write the manifest: fetch each task's raw files, prepare its data
(one unit per task), then run every grid point in a thread pool of `finetune.concurrency`
workers (torch releases the GIL in its kernels; each worker gets cores / concurrency torch
threads). Keys come from `mediswift.finetune.keys`. MLflow: one parent run per (variant, task)
sweep, a child run per grid point; the parent lists every point of the sweep (tags and a linked
table), those found done included. Manifest: `mediswift.manifests.FinetuneManifest`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from mediswift import manifests
from mediswift.artifacts import Artifact, unit_at
from mediswift.config import PipelineConfig
from mediswift.manifests import PretrainManifest
from mediswift.stages import finetune as S
from mediswift.tracking import Tracker, resolve_tracking_uri
from tasks import finetune as t
from tasks.common import cached
from tasks.tracking import flow_run_tags, link_mlflow_run


@flow(name="finetune-sweep")
def finetune_sweep(
    home: str, data: dict[str, str], points: dict[str, str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prepare every task's data, then run every grid point (in the flow's thread pool).

    `data` and `points` map unit keys to display names: each unit's spec is in its directory
    (`spec.json`), so the subflow's parameters stay small."""
    root = Path(home)

    def submit(task: Any, key: str, name: str) -> Any:
        unit = unit_at(root, "finetune", key)
        return cached(task, root, unit).submit(key=key, home=home, name=name)

    data_results = [f.result() for f in [submit(t.prepare_data, k, n) for k, n in data.items()]]
    return data_results, [
        f.result() for f in [submit(t.finetune_point, k, n) for k, n in points.items()]
    ]


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    fc = cfg.finetune
    pretrain = manifests.read(inputs["pretrain"], PretrainManifest)
    threads = S.use_threads(fc)
    fetched = {name: t.fetch_files.submit(cfg, name, str(home)) for name in fc.tasks}
    files = {name: f.result() for name, f in fetched.items()}
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    tracker = Tracker(uri, cfg.tracking.finetune_experiment, artifact_root=home / "mlruns")
    tracking = S.tracking_spec(uri, home, cfg.tracking.finetune_experiment, flow_run_tags())
    data, plans = S.sweeps(fc, home, pretrain, files, inputs["vocab"], tracking)
    parents = {}
    for plan in plans:
        parents[plan.key] = S.parent_run(tracker, plan, flow_run_tags())
        name = f"{plan.variant.name}-{plan.task} sweep"
        link_mlflow_run(parents[plan.key], tracker.experiment_id, uri, name)
    S.write_specs(data, plans, tracking, parents)
    points = {spec.key: spec.name for plan in plans for spec, _ in plan.points}
    get_run_logger().info(
        "finetune: %d variants x %s, %d grid points, %d workers x %d torch threads",
        len(pretrain.variants), list(fc.tasks), len(points), fc.concurrency, threads,
    )  # fmt: skip
    runner = ThreadPoolTaskRunner(max_workers=fc.concurrency)
    data_results, results = finetune_sweep.with_options(task_runner=runner)(
        home=str(home), data={spec.key: spec.task for spec, _ in data.values()}, points=points
    )
    manifest = S.collect(home, tracker, data, data_results, plans, parents, results, threads)
    return manifests.write(out, manifest)
