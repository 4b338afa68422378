"""Prefect tasks of the download stage: each wraps one function of `mediswift.data`.

Units a user would want to see and re-run: one task per PubMed file, per batch of PMC articles,
and per extra corpus, plus the two listing tasks. All of them touch the
network, so all retry, but only on `TransientError` (timeouts, resets, 5xx, 429): a 404, a bad
checksum or an unsafe name fails at once with its message. The download tasks take `key`, the
content key of their unit, and are bound to the content cache by the stage (`tasks.common.cached`);
each writes its unit manifest last so a unit whose files were deleted is fetched again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from mediswift.artifacts import Artifact, unit_at
from mediswift.data.download import TransientError, client_for
from mediswift.data.pmc_files import PmcArticle, fetch_pmc_batch, select_pmc
from mediswift.data.pubmed_files import PubmedFile, fetch_pubmed, list_pubmed
from mediswift.data.sources import fetch_corpus
from mediswift.settings import DownloadConfig


def is_transient(task: Task[Any, Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect retry condition: retry network faults only, never permanent errors."""
    exc = state.data if isinstance(state.data, BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as e:  # the result itself could not be read: treat as the error
            exc = e
    return isinstance(exc, TransientError)


NETWORK = {"retries": 2, "retry_delay_seconds": [10, 60], "retry_condition_fn": is_transient}


def unit(home: str, key: str) -> Artifact:
    """The unit artifact for `key` (see `mediswift.artifacts.unit_artifact`)."""
    return unit_at(Path(home), "download", key)


def _done(home: str, key: str, result: dict[str, Any]) -> dict[str, Any]:
    unit(home, key).ensure().write_manifest(result)
    return result


def raw_dir(home: str) -> Path:
    return Path(home) / "raw"


@task(name="download-list-pubmed", **NETWORK)
def list_pubmed_files(cfg: DownloadConfig, base: str) -> list[dict[str, Any]]:
    files = list_pubmed(
        client_for(cfg),
        base,
        cfg.pubmed_max_files,
        cfg.pubmed_include_updates,
        cfg.pubmed_max_update_files,
    )
    return [f.to_dict() for f in files]


@task(name="download-select-pmc", **NETWORK)
def select_pmc_articles(cfg: DownloadConfig, base: str, home: str) -> dict[str, Any]:
    articles, skipped = select_pmc(
        client_for(cfg),
        base,
        raw_dir(home),
        cfg.pmc_max_articles,
        cfg.pmc_commercial_only,
        metadata_connections=cfg.pmc_metadata_connections,
    )
    return {"articles": [a.to_dict() for a in articles], "skipped": skipped}


@task(name="download-pubmed-file", task_run_name="pubmed-{file[name]}", **NETWORK)
def download_pubmed_file(
    key: str, home: str, cfg: DownloadConfig, file: dict[str, Any]
) -> dict[str, Any]:
    entry = fetch_pubmed(client_for(cfg), raw_dir(home), PubmedFile(**file))
    return _done(home, key, entry)


@task(name="download-pmc-batch", task_run_name="pmc-batch-{index}", **NETWORK)
def download_pmc_batch(
    key: str, home: str, cfg: DownloadConfig, base: str, articles: list[dict[str, Any]], index: int
) -> dict[str, Any]:
    batch = [PmcArticle(**a) for a in articles]
    entries = fetch_pmc_batch(client_for(cfg), base, raw_dir(home), batch)
    return _done(home, key, {"entries": entries})


@task(name="download-corpus", task_run_name="corpus-{spec}", **NETWORK)
def download_corpus(
    key: str, home: str, cfg: DownloadConfig, spec: str, mirror: str | None
) -> dict[str, Any]:
    return _done(home, key, fetch_corpus(client_for(cfg), spec, mirror, raw_dir(home)))
