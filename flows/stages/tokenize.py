"""The tokenize stage: one task per document shard, fanned out through a Prefect task runner.

Locally the tasks run in a process pool (`ProcessPoolTaskRunner`, `tokenize.workers` processes);
when the recipe names a Dask scheduler (`tokenize.dask_address`) they run on that cluster through
`prefect_dask.DaskTaskRunner`. Each task is a content-addressed unit (document shard x tokenizer
hash), so shards already tokenized by any earlier run are not redone.

Manifest: the `tokenize` entry of the stage manifests (shards with split, n_docs, n_tokens;
token totals per split; tokenizer hash; vocab size).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from flows.stages.vocab import doc_shard_paths
from mediswift import manifests
from mediswift.artifacts import Artifact, unit_artifact, unit_at
from mediswift.config import ExecutorConfig, PipelineConfig, TokenizeConfig
from mediswift.manifests import TokenizeManifest, VocabManifest
from mediswift.text.token_shards import SPLITS
from tasks import tokenize as t
from tasks.common import cached

# Bump when the token shard format or the tokenization of a document changes.
UNIT_VERSION = 1


def task_runner(cfg: TokenizeConfig, executor: ExecutorConfig | None = None) -> TaskRunner:
    """The recipe's Dask cluster (`executor`, or the older `tokenize.dask_address`), else a
    local process pool (tokenization is CPU-bound Python: threads would share one core)."""
    address = executor.address if executor and executor.kind == "dask" else cfg.dask_address
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    return ProcessPoolTaskRunner(max_workers=cfg.workers)


@contextmanager
def workers_share_api() -> Iterator[None]:
    """Point worker processes at this process's temporary API server, if it uses one.

    Process-pool workers inherit the settings as environment variables; with no API URL
    configured (a local run without a server) each worker would start a temporary server of its
    own, which costs tens of seconds per worker and splits the run's records.
    """
    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)
    if server is None or not server.running:
        yield
        return
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


@flow(name="tokenize-shards")
def tokenize_shards(
    home: str, tokenizer_dir: str, units: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """Submit one tokenize task per document shard and wait for all (in submission order)."""
    root = Path(home)
    futures = []
    for u in units:
        art = unit_at(root, "tokenize", u["key"])
        futures.append(
            cached(t.tokenize_shard, root, art).submit(
                key=u["key"],
                home=home,
                name=u["name"],
                doc_shard=u["doc_shard"],
                tokenizer_dir=tokenizer_dir,
            )
        )
    return [f.result() for f in futures]


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    filter_art, vocab_art = inputs["filter"], inputs["vocab"]
    vocab = manifests.read(vocab_art, VocabManifest).model_dump()
    units = []
    for i, shard in enumerate(doc_shard_paths(home, filter_art)):
        rel = str(shard.relative_to(home))
        unit = unit_artifact(home, "tokenize", UNIT_VERSION, filter_art.key, rel, vocab["hash"])
        # Shown in the UI: the position in the filter manifest keeps names unique even when
        # every document shard has the same file name in its own unit folder.
        units.append({"key": unit.key, "name": f"{i:04d}-{shard.stem}", "doc_shard": str(shard)})
    runner = task_runner(cfg.tokenize, cfg.executor)
    log.info("tokenize: %d document shards on %s", len(units), type(runner).__name__)
    with workers_share_api():
        results = tokenize_shards.with_options(task_runner=runner)(
            home=str(home), tokenizer_dir=str(vocab_art.path), units=units
        )
    shards = [s for r in results for s in r["shards"]]
    for r in results:
        if r["tokenizer_hash"] != vocab["hash"]:
            raise RuntimeError(f"unit for {r['input']} was made with another tokenizer")
    tokens = {s: sum(x["n_tokens"] for x in shards if x["split"] == s) for s in SPLITS}
    docs = {s: sum(x["n_docs"] for x in shards if x["split"] == s) for s in SPLITS}
    log.info("tokenize: %s tokens in %s documents", tokens, docs)
    manifest = TokenizeManifest(
        shards=shards,
        tokens=tokens,
        docs=docs,
        tokenizer_hash=vocab["hash"],
        vocab_size=vocab["vocab_size"],
    )
    return manifests.write(out, manifest)
