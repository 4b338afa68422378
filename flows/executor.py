"""Where the per-unit work of the data stages runs: in this process's thread pool, or on a
Dask cluster (`executor: {kind: dask, address: tcp://scheduler:8786}` in a recipe).

A data stage (download, parse, filter, tokenize) runs as a subflow whose task runner is a
`prefect_dask.DaskTaskRunner` when the recipe says so: its unit tasks (one per file, shard or
batch) go to the cluster's workers, and the stage's small global steps (listings, the filter's
plan, the manifests) stay in the flow process. Workers need the code and the same home path
(a shared file system) and mirror; outputs are the same as a local run's (the units are
content-addressed and computed by the same code), which `tests/test_dask_cluster.py` checks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from prefect import flow
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from flows.server import pool_worker_init
from mediswift.config import PipelineConfig
from mediswift.console import console_is_quiet


class Placed(Protocol):
    """A stage as placement sees it (`flows.registry.Stage`)."""

    name: str
    on_cluster: bool


def dask_runner(address: str) -> TaskRunner:
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def cpu_runner(workers: int, dask_address: str | None = None) -> TaskRunner:
    """Where CPU-bound unit tasks (Moses, tokenization: pure Python, so threads would share one
    core) run: the Dask cluster at `dask_address`, else a local process pool of `workers`, or,
    for one worker, this process (a pool of one would only add a process start and its imports:
    seconds, most of a small run's stage)."""
    if dask_address:
        return dask_runner(dask_address)
    if workers == 1:
        return ThreadPoolTaskRunner(max_workers=1)
    # Workers leave Ctrl-C to this process and die with it (SIGKILL included).
    return ProcessPoolTaskRunner(
        max_workers=workers,
        initializer=pool_worker_init,
        initargs=(os.getpid(), console_is_quiet()),
    )


def on_cluster(cfg: PipelineConfig, stage: Placed) -> bool:
    return cfg.executor.kind == "dask" and stage.on_cluster


@flow(name="stage-on-cluster")
def stage_on_cluster(stage: str, call: Any) -> Any:
    """The stage's own `run`, inside a subflow whose tasks go to the cluster."""
    return call()


def run_stage_on(cfg: PipelineConfig, stage: Placed, run: Callable[[], Any]) -> Any:
    """Run `run` (the stage's body) where the recipe's executor says."""
    if not on_cluster(cfg, stage):
        return run()
    runner = dask_runner(cfg.executor.address or "")
    return stage_on_cluster.with_options(
        name=f"{stage.name}-on-cluster", task_runner=runner, validate_parameters=False
    )(stage=stage.name, call=run)
