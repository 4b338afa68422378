"""Vocab task: learn the BPE vocabulary (one task: sentencepiece training is one job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from mediswift.artifacts import Artifact
from mediswift.config import VocabConfig
from mediswift.manifests import FilterManifest
from mediswift.stages import vocab as S


@task(name="learn-vocab", task_run_name="learn-vocab-{cfg.vocab_size}")
def learn_vocab(
    cfg: VocabConfig, home: str, filtered: FilterManifest, out: Artifact
) -> dict[str, Any]:
    return S.run_unit(cfg, Path(home), filtered, out, get_run_logger()).model_dump()
