"""Prefect tasks of the download stage: each wraps one function of `mediswift.data`.

Units a user would want to see and re-run: one task per unit of `mediswift.stages.download` (a
PubMed file, a batch of PMC articles, an extra corpus), plus the two listing tasks. All of them
touch the network, so all retry, but only on `TransientError` (timeouts, resets, 5xx, 429): a
404, a bad checksum or an unsafe name fails at once with its message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import Task, task
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from mediswift.data.download import TransientError, client_for
from mediswift.data.pmc_select import select_pmc
from mediswift.data.pubmed_files import PubmedFile, list_pubmed
from mediswift.sections import DownloadConfig
from mediswift.stages import download as S


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


def raw_dir(home: str) -> Path:
    return Path(home) / "raw"


@task(name="download-list-pubmed", **NETWORK)
def list_pubmed_files(cfg: DownloadConfig, base: str) -> list[PubmedFile]:
    files = list_pubmed(
        client_for(cfg),
        base,
        cfg.pubmed_max_files,
        cfg.pubmed_include_updates,
        cfg.pubmed_max_update_files,
    )
    return list(files)


@task(name="download-select-pmc", **NETWORK)
def select_pmc_articles(cfg: DownloadConfig, base: str, home: str) -> S.PmcSelection:
    articles, skipped = select_pmc(
        client_for(cfg),
        base,
        raw_dir(home),
        cfg.pmc_max_articles,
        cfg.pmc_commercial_only,
        metadata_connections=cfg.pmc_metadata_connections,
    )
    return S.PmcSelection(articles=articles, skipped=skipped)


@task(name="download", task_run_name="{spec.run_name}", **NETWORK)
def download_unit(spec: S.DownloadSpec, home: str) -> S.DownloadResult:
    return S.run_unit(spec, Path(home))
