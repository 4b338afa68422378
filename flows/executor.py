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

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefect import flow
from prefect.task_runners import TaskRunner

from mediswift.config import PipelineConfig

if TYPE_CHECKING:
    from flows.registry import Stage


def dask_runner(address: str) -> TaskRunner:
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def on_cluster(cfg: PipelineConfig, stage: Stage) -> bool:
    return cfg.executor.kind == "dask" and stage.on_cluster


@flow(name="stage-on-cluster")
def stage_on_cluster(stage: str, call: Any) -> Any:
    """The stage's own `run`, inside a subflow whose tasks go to the cluster."""
    return call()


def run_stage_on(cfg: PipelineConfig, stage: Stage, run: Callable[[], Any]) -> Any:
    """Run `run` (the stage's body) where the recipe's executor says."""
    if not on_cluster(cfg, stage):
        return run()
    runner = dask_runner(cfg.executor.address or "")
    return stage_on_cluster.with_options(
        name=f"{stage.name}-on-cluster", task_runner=runner, validate_parameters=False
    )(stage=stage.name, call=run)
