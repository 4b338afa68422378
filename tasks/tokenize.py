"""Tokenize task: one document shard -> its token shards (one per split), as a cached unit."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mediswift.stages import tokenize as S


@task(name="tokenize-shard", task_run_name="tokenize-{spec.name}")
def tokenize_shard(spec: S.TokenizeSpec, home: str) -> S.TokenizeResult:
    return S.run_unit(spec, Path(home))
