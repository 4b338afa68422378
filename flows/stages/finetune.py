"""The finetune stage: every pre-trained variant x task x grid point (batch, lr, seed).

One Prefect task per grid point, run by a thread pool of `finetune.concurrency` workers (torch
releases the GIL in its kernels; each worker gets cores / concurrency torch threads so the pool
does not oversubscribe the machine). Units are content-addressed, so a re-run of the sweep
trains only the points not yet finished. MLflow: one parent run per (variant, task) sweep in
`tracking.finetune_experiment`, a child run per grid point.

Manifest:
  {"tasks": {task: {"data": unit path, "metric": str, "counts": {...}, "majority": {...}}},
   "sweeps": [{"variant", "task", "metric", "parent_run_id",
               "points": [{"unit": path, "batch_size", "lr", "seed", "metrics": {...},
                           "steps", "best_epoch", "mlflow_run_id"}]}],
   "modes": [...], "torch_threads": n}
(paths relative to <home>; metrics: dev_<mode> and test_<mode> for mode in generate/score).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from mediswift.artifacts import Artifact, content_key, file_digest, unit_artifact
from mediswift.config import FinetuneConfig, PipelineConfig
from mediswift.data.download import client_for, fetch_file
from mediswift.finetune.grid import grid_points
from mediswift.tracking import Tracker, resolve_tracking_uri
from tasks import finetune as t
from tasks.common import cached
from tasks.tracking import flow_run_tags, link_mlflow_run

MODES = ("generate", "score")
# Bump when a unit's content or meaning changes (data format, training or evaluation code).
UNIT_VERSION = 1
# Settings that only schedule work: they never change a grid point's result.
_SCHEDULING = {
    "tasks",
    "seeds",
    "pubmedqa_grid",
    "hoc_grid",
    "concurrency",
    "torch_threads",
    "device",
}


# Settings that belong to one task only: they never change the other task's results.
_TASK_PREFIXES = {"pubmedqa": ("pubmedqa_", "pqa_", "pqal_"), "hoc": ("hoc_",)}


def point_settings(cfg: FinetuneConfig, task: str) -> dict[str, Any]:
    """The settings that can change `task`'s results (so a HoC setting never re-keys PubMedQA)."""
    others = tuple(p for t, ps in _TASK_PREFIXES.items() if t != task for p in ps)
    dump = cfg.model_dump(mode="json", exclude=_SCHEDULING)
    return {k: v for k, v in dump.items() if not k.startswith(others)}


def raw_inputs(home: Path, download: dict[str, Any], task: str) -> dict[str, str]:
    if task not in download:
        raise RuntimeError(f"the download manifest lists no '{task}' files: download it first")
    return {k: str(home / v) for k, v in download[task].items()}


def stage_sources(cfg: PipelineConfig, home: Path) -> dict[str, str]:
    """PQA-A / PQA-U files for multi-stage PubMedQA, fetched into <home>/raw/pubmedqa."""
    out = {}
    client = None
    for name, url in (("pqa_a", cfg.finetune.pqa_a_url), ("pqa_u", cfg.finetune.pqa_u_url)):
        if not url:
            continue
        client = client or client_for(cfg.download)
        dest = home / "raw" / "pubmedqa" / Path(url.split("?")[0]).name
        out[name] = str(fetch_file(client, cfg.resolve(url), dest).path)
    return out


def parent_run(tracker: Tracker, sweep_key: str) -> str | None:
    """The parent run an earlier attempt at this very sweep created, so a re-run reuses it."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id], f"tags.`mediswift.sweep` = '{sweep_key}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


@flow(name="finetune-sweep")
def finetune_sweep(
    home: str, data_jobs: list[dict[str, Any]], point_jobs: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prepare every task's data, then run every grid point (in the flow's thread pool)."""
    root = Path(home)
    data = [
        cached(t.prepare_data, root, Artifact("finetune", j["key"], Path(j["path"]))).submit(
            **{k: v for k, v in j.items() if k != "path"}
        )
        for j in data_jobs
    ]
    data_results = [f.result() for f in data]
    points = [
        cached(t.finetune_point, root, Artifact("finetune", j["key"], Path(j["path"]))).submit(
            **{k: v for k, v in j.items() if k != "path"}
        )
        for j in point_jobs
    ]
    return data_results, [f.result() for f in points]


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    fc = cfg.finetune
    pretrain, vocab = inputs["pretrain"].manifest(), inputs["vocab"]
    download = inputs["download"].manifest()
    threads = fc.torch_threads or max(1, (os.cpu_count() or 1) // fc.concurrency)
    torch.set_num_threads(threads)
    extra = stage_sources(cfg, home) if "pubmedqa" in fc.tasks else {}

    vocab_hash = vocab.manifest()["hash"]
    data_jobs, data_units = [], {}
    for task in fc.tasks:
        raw = raw_inputs(home, download, task)
        sources = {**raw, **(extra if task == "pubmedqa" else {})}
        digests = {k: file_digest(Path(p)) for k, p in sources.items()}
        settings = point_settings(fc, task)
        unit = unit_artifact(
            home, "finetune", UNIT_VERSION, "data", task, digests, settings, vocab_hash
        )
        data_units[task] = unit
        data_jobs.append(
            {
                "key": unit.key,
                "path": str(unit.path),
                "home": str(home),
                "task_name": task,
                "raw": raw,
                "extra": extra if task == "pubmedqa" else {},
                "cfg": fc.model_dump(mode="json"),
                "tokenizer_dir": str(vocab.path),
            }
        )

    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    tracker = Tracker(uri, cfg.tracking.finetune_experiment, artifact_root=home / "mlruns")
    tags = flow_run_tags()
    # Both prediction modes, always: the finetune output does not depend on the evaluate section
    # (which is not part of this stage's key), and evaluate picks the modes it reports.
    modes = list(MODES)
    sweeps, point_jobs = [], []
    for variant in pretrain["variants"]:
        ckpt = home / variant["checkpoint"]
        for task in fc.tasks:
            grid = fc.pubmedqa_grid if task == "pubmedqa" else fc.hoc_grid
            settings = point_settings(fc, task)
            # The checkpoint path is content-addressed (the variant's own unit), so adding a
            # variant to the recipe does not re-key the sweeps of the others.
            sweep_key = content_key(
                "sweep",
                UNIT_VERSION,
                variant["checkpoint"],
                data_units[task].key,
                grid,
                fc.seeds,
                settings,
                modes,
            )
            earlier = parent_run(tracker, sweep_key)  # params are logged once, when created
            params = {
                "variant": variant["name"],
                "task": task,
                "checkpoint": variant["checkpoint"],
                "batch_sizes": grid.batch_sizes,
                "learning_rates": grid.learning_rates,
                "seeds": fc.seeds,
                **settings,
            }
            with tracker.run(
                f"{variant['name']}-{task}",
                params=None if earlier else params,
                tags={"mediswift.kind": "finetune-sweep", "mediswift.sweep": sweep_key, **tags},
                run_id=earlier,
            ) as parent:
                pass
            link_mlflow_run(
                parent.run_id, tracker.experiment_id, uri, f"{variant['name']}-{task} sweep"
            )
            sweep = {
                "variant": variant["name"],
                "task": task,
                "parent_run_id": parent.run_id,
                "keys": [],
            }
            for p in grid_points(fc, task):
                unit = unit_artifact(
                    home,
                    "finetune",
                    UNIT_VERSION,
                    "point",
                    variant["checkpoint"],
                    vocab.manifest()["hash"],
                    data_units[task].key,
                    p.batch_size,
                    p.lr,
                    p.seed,
                    settings,
                    modes,
                )
                sweep["keys"].append(unit.key)
                point_jobs.append(
                    {
                        "key": unit.key,
                        "path": str(unit.path),
                        "home": str(home),
                        "variant": variant["name"],
                        "task_name": task,
                        "checkpoint": str(ckpt),
                        "data_dir": str(data_units[task].path),
                        "tokenizer_dir": str(vocab.path),
                        "cfg": fc.model_dump(mode="json"),
                        "batch_size": p.batch_size,
                        "lr": p.lr,
                        "seed": p.seed,
                        "modes": modes,
                        "tracking": {
                            "uri": uri,
                            "experiment": cfg.tracking.finetune_experiment,
                            "parent_run_id": parent.run_id,
                            "tags": tags,
                        },
                    }
                )
            sweeps.append(sweep)
    log.info(
        "finetune: %d variants x %s, %d grid points, %d workers x %d torch threads",
        len(pretrain["variants"]),
        fc.tasks,
        len(point_jobs),
        fc.concurrency,
        threads,
    )
    runner = ThreadPoolTaskRunner(max_workers=fc.concurrency)
    data_results, results = finetune_sweep.with_options(task_runner=runner)(
        home=str(home), data_jobs=data_jobs, point_jobs=point_jobs
    )
    by_key = {j["key"]: r for j, r in zip(point_jobs, results, strict=True)}
    tasks_info = {
        d["task"]: {
            "data": str(data_units[d["task"]].path.relative_to(home)),
            "metric": d["metric"],
            "counts": d["counts"],
            "full_counts": d["full_counts"],
            "majority": d["majority"],
            "stages": [s["name"] for s in d["stages"]],
        }
        for d in data_results
    }
    out_sweeps = []
    for s in sweeps:
        points = []
        for key in s["keys"]:
            r = by_key[key]
            points.append(
                {
                    "unit": f"finetune/units/{key}",
                    "batch_size": r["batch_size"],
                    "lr": r["lr"],
                    "seed": r["seed"],
                    "metrics": r["metrics"],
                    "steps": r["steps"],
                    "best_epoch": r["stages"][-1]["best_epoch"],
                    "mlflow_run_id": r.get("mlflow_run_id"),
                }
            )
        out_sweeps.append(
            {
                "variant": s["variant"],
                "task": s["task"],
                "metric": tasks_info[s["task"]]["metric"],
                "parent_run_id": s["parent_run_id"],
                "points": points,
            }
        )
    return out.ensure().write_manifest(
        {"tasks": tasks_info, "sweeps": out_sweeps, "modes": modes, "torch_threads": threads}
    )
