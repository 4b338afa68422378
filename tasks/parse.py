"""Prefect task of the parse stage: one per unit of `mediswift.stages.parse` (a PubMed file, a
batch of PMC articles, an extra corpus). Parsing never touches the network: no retries."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from mediswift.stages import parse as S


@task(name="parse", task_run_name="{spec.run_name}")
def parse_unit(spec: S.ParseSpec, home: str) -> S.ParseResult:
    return S.run_unit(spec, Path(home))
