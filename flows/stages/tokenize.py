"""The tokenize stage: one task per document shard, fanned out through a Prefect task runner.

Locally the tasks run in a process pool (`ProcessPoolTaskRunner`, `tokenize.workers` processes),
or in this process when `tokenize.workers` is 1; when the recipe names a Dask scheduler
(`tokenize.dask_address`) they run on that cluster through `prefect_dask.DaskTaskRunner`. Each
task is a content-addressed unit (document shard x tokenizer hash), so shards already tokenized
by any earlier run are not redone.

Manifest: the `tokenize` entry of the stage manifests (shards with split, n_docs, n_tokens;
token totals per split; tokenizer hash; vocab size).
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
from mediswift.config import ExecutorConfig, PipelineConfig, TokenizeConfig
from mediswift.manifests import FilterManifest, VocabManifest
from mediswift.stages import tokenize as S
from tasks import tokenize as t
from tasks.common import run_units


def task_runner(cfg: TokenizeConfig, executor: ExecutorConfig | None = None) -> TaskRunner:
    """The recipe's Dask cluster (`executor`, or the older `tokenize.dask_address`), else a
    local process pool (tokenization is CPU-bound Python: threads would share one core), or,
    for one worker, this process: a pool of one would only add a process start and its
    imports (seconds, most of a small run's tokenize stage), as the parse stage runs here."""
    address = executor.address if executor and executor.kind == "dask" else cfg.dask_address
    return cpu_runner(cfg.workers, address)


@flow(name="tokenize-shards")
def tokenize_shards(home: str, specs: list[S.TokenizeSpec]) -> list[S.TokenizeResult]:
    """Submit one tokenize task per document shard and wait for all (in submission order)."""
    return run_units(t.tokenize_shard, Path(home), specs)


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    vocab = manifests.read(inputs["vocab"], VocabManifest)
    filtered = manifests.read(inputs["filter"], FilterManifest)
    specs = S.units(home, filtered, inputs["vocab"].path, vocab)
    runner = task_runner(cfg.tokenize, cfg.executor)
    get_run_logger().info("tokenize: %d document shards on %s", len(specs), type(runner).__name__)
    with workers_share_api():
        results = tokenize_shards.with_options(task_runner=runner)(home=str(home), specs=specs)
    return manifests.write(out, S.collect(vocab, results, get_run_logger()))
