"""The finetune stage: every pre-trained variant x downstream task x grid point (batch, lr, seed).

Plan units, submit, collect, write the manifest: fetch each task's raw files, prepare its data
(one unit per task), then run every grid point in a thread pool of `finetune.concurrency`
workers (torch releases the GIL in its kernels; each worker gets cores / concurrency torch
threads). Keys come from `mediswift.finetune.plan`. MLflow: one parent run per (variant, task)
sweep, a child run per grid point; the parent lists every point of the sweep (tags and a linked
table), those found done included. Manifest: `mediswift.manifests.FinetuneManifest`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from mediswift import manifests
from mediswift.artifacts import Artifact, unit_at
from mediswift.config import PipelineConfig
from mediswift.finetune import plan as P
from mediswift.manifests import PretrainManifest, TrackingSpec
from mediswift.tracking import (
    NOTE_TAG,
    RunLogger,
    Tracker,
    portable_tracking_uri,
    resolve_tracking_uri,
)
from tasks import finetune as t
from tasks.common import cached
from tasks.tracking import flow_run_tags, link_mlflow_run


def parent_run(tracker: Tracker, plan: P.SweepPlan) -> str:
    """The sweep's parent run: the one an earlier attempt at this very sweep created, or new."""
    found = tracker.client.search_runs(
        [tracker.experiment_id], f"tags.`mediswift.sweep` = '{plan.key}'", max_results=1
    )
    earlier = found[0].info.run_id if found else None
    with tracker.run(
        f"{plan.variant.name}-{plan.task}",
        params=None if earlier else plan.params,  # params are logged once, when created
        tags={"mediswift.kind": "finetune-sweep", "mediswift.sweep": plan.key, **flow_run_tags()},
        run_id=earlier,
    ) as parent:
        pass
    return parent.run_id


def list_points(
    tracker: Tracker, parent_id: str, plan: P.SweepPlan, results: dict[str, dict[str, Any]]
) -> None:
    """Tag the sweep's parent run with every one of its points, and describe them in a table
    with links: points found done (trained under an earlier parent, for another sweep key) are
    listed as much as those trained now, so the parent shows the whole sweep."""
    rows = ["| point | dev | test | run |", "|---|---|---|---|"]
    tags = {"mediswift.points": str(len(plan.points))}
    for spec, _ in plan.points:
        r = results[spec.key]
        point = f"b{spec.batch_size}-lr{spec.lr:g}-s{spec.seed}"
        run_id = r.get("mlflow_run_id")
        tags[f"mediswift.point.{point}"] = run_id or spec.key
        metrics = r.get("metrics", {})
        dev = ", ".join(f"{k[4:]} {v:.4f}" for k, v in metrics.items() if k.startswith("dev_"))
        test = ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items() if k.startswith("test_"))
        link = f"[{run_id[:8]}]({tracker.run_link(run_id)})" if run_id else spec.key
        rows.append(f"| {point} | {dev} | {test} | {link} |")
    tags[NOTE_TAG] = f"Grid points of {plan.variant.name} on {plan.task}:\n\n" + "\n".join(rows)
    RunLogger(tracker.client, parent_id).set_tags(tags)


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
    log = get_run_logger()
    fc = cfg.finetune
    pretrain = manifests.read(inputs["pretrain"], PretrainManifest)
    vocab = inputs["vocab"]
    threads = fc.torch_threads or max(1, (os.cpu_count() or 1) // fc.concurrency)
    torch.set_num_threads(threads)

    fetched = {name: t.fetch_files.submit(cfg, name, str(home)) for name in fc.tasks}
    data = {name: P.data_spec(fc, home, name, f.result(), vocab) for name, f in fetched.items()}

    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    tracker = Tracker(uri, cfg.tracking.finetune_experiment, artifact_root=home / "mlruns")
    tracking = TrackingSpec(
        uri=portable_tracking_uri(uri, home),  # unit specs are files in the home
        experiment=cfg.tracking.finetune_experiment,
        tags=flow_run_tags(),
    )
    plans = P.sweep_plans(fc, home, pretrain.variants, data, vocab, tracking)
    parents = {}
    for plan in plans:
        parents[plan.key] = parent_run(tracker, plan)
        link_mlflow_run(
            parents[plan.key], tracker.experiment_id, uri, f"{plan.variant.name}-{plan.task} sweep"
        )
        for spec, _ in plan.points:
            spec.tracking = tracking.model_copy(update={"parent_run_id": parents[plan.key]})
    points = [spec for plan in plans for spec, _ in plan.points]
    log.info(
        "finetune: %d variants x %s, %d grid points, %d workers x %d torch threads",
        len(pretrain.variants),
        list(fc.tasks),
        len(points),
        fc.concurrency,
        threads,
    )
    for spec, unit in data.values():
        P.write_spec(unit, spec)
    for plan in plans:
        for spec, unit in plan.points:
            P.write_spec(unit, spec)
    runner = ThreadPoolTaskRunner(max_workers=fc.concurrency)
    data_results, results = finetune_sweep.with_options(task_runner=runner)(
        home=str(home),
        data={spec.key: spec.task for spec, _ in data.values()},
        points={spec.key: spec.name for spec in points},
    )
    by_key = {p.key: r for p, r in zip(points, results, strict=True)}
    for plan in plans:
        list_points(tracker, parents[plan.key], plan, by_key)
    manifest = P.manifest(
        home,
        data,
        dict(zip(data, data_results, strict=True)),
        plans,
        parents,
        by_key,
        threads,
    )
    return manifests.write(out, manifest)
