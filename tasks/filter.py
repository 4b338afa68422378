"""Prefect tasks of the filter stage: one per unit kind of `mediswift.stages.filter`, plus the
fetch of the evaluation files decontamination reads (the only one on the network, so the only
one that retries). Each takes its unit's spec; the unit manifest is written last."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mediswift.config import PipelineConfig
from mediswift.data.download import client_for
from mediswift.finetune.results import TaskFiles
from mediswift.finetune.sources import fetch_task_files
from mediswift.stages import filter as S
from mediswift.stages import filter_contamination as C
from tasks.download import NETWORK


@task(name="filter-scan", task_run_name="filter-scan-{spec.index}")
def scan(spec: S.ScanSpec, home: str) -> S.ScanResult:
    return S.run_scan(spec, Path(home))


@task(name="filter-merge")
def merge(spec: S.MergeSpec, home: str) -> S.MergeResult:
    return S.run_merge(spec, Path(home))


@task(name="filter-shard", task_run_name="filter-shard-{spec.index}")
def filter_shard(spec: S.ShardSpec, home: str) -> S.ShardResult:
    return S.run_shard(spec, Path(home))


@task(name="filter-ngram-counts", task_run_name="filter-ngram-counts-{spec.index}")
def count_ngrams(spec: C.CountSpec, home: str) -> C.CountResult:
    return C.run_counts(spec, Path(home))


@task(name="filter-frequent-ngrams")
def frequent_ngrams(spec: C.FrequentSpec, home: str) -> C.FrequentResult:
    return C.run_frequent(spec, Path(home))


@task(name="filter-contamination-index")
def contamination_index(spec: C.IndexSpec, home: str) -> C.IndexResult:
    return C.run_index(spec, Path(home))


@task(name="filter-fetch-eval", task_run_name="fetch-eval-{task_name}", **NETWORK)
def fetch_eval_files(cfg: PipelineConfig, task_name: str, home: str) -> TaskFiles:
    """The task's raw files under <home>/raw (mirrored when the recipe has a mirror)."""
    files = fetch_task_files(
        client_for(cfg.download),
        cfg.finetune.task(task_name),
        Path(home),
        cfg.resolve,
        eval_only=True,
    )
    return TaskFiles(files=files)
