"""The vocab stage's orchestration: one Moses task per document shard, fanned out through a
Prefect task runner as the tokenize stage's shards are, then one BPE task on all of them, then
the manifest (what each unit does: `mediswift.stages.vocab`).

Locally the Moses tasks run in a process pool (`vocab.workers` processes), or in this process
when `vocab.workers` is 1; when the recipe's executor is a Dask cluster they run on its
workers. BPE learning is one process's job and stays here. Every unit is content-addressed, so
shards tokenized by an earlier (or crashed) run are not redone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.task_runners import TaskRunner

from flows.executor import cpu_runner
from flows.server import workers_share_api
from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import ExecutorConfig, PipelineConfig
from mediswift.manifests import FilterManifest
from mediswift.stages import vocab as S
from tasks import vocab as t
from tasks.common import run_units, submit_unit


def task_runner(workers: int, executor: ExecutorConfig | None = None) -> TaskRunner:
    """The recipe's Dask cluster, else a local process pool (Moses is CPU-bound Python:
    threads would share one core), or, for one worker, this process (a pool of one would only
    add a process start and its imports)."""
    dask = executor is not None and executor.kind == "dask"
    return cpu_runner(workers, executor.address if dask else None)


@flow(name="vocab-moses-shards")
def moses_shards(home: str, specs: list[S.MosesSpec]) -> list[S.MosesResult]:
    """Submit one Moses task per document shard and wait for all (in submission order)."""
    return run_units(t.moses_shard, Path(home), specs)


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    filtered = manifests.read(inputs["filter"], FilterManifest)
    specs = S.moses_units(home, filtered)
    runner = task_runner(cfg.vocab.workers, cfg.executor)
    get_run_logger().info(
        "vocab: Moses over %d document shards on %s", len(specs), type(runner).__name__
    )
    with workers_share_api():
        moses_shards.with_options(task_runner=runner)(home=str(home), specs=specs)
    spec = S.bpe_unit(cfg.vocab, specs)
    learned = submit_unit(t.learn_vocab, home, spec).result()
    return manifests.write(out, S.collect(home, spec, learned, out, get_run_logger()))
