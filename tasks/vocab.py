"""Vocab task: learn the BPE vocabulary (one task: sentencepiece training is one job)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from mediswift.config import VocabConfig
from mediswift.text.tokenizer import build_vocab


@task(name="learn-vocab", task_run_name="learn-vocab-{cfg.vocab_size}")
def learn_vocab(key: str, doc_shards: list[str], out_dir: str, cfg: VocabConfig) -> dict[str, Any]:
    """Moses + sentencepiece BPE on the train split of `doc_shards`, written into `out_dir`."""
    return build_vocab(
        [Path(p) for p in doc_shards],
        Path(out_dir),
        vocab_size=cfg.vocab_size,
        sample_sentences=cfg.sample_sentences,
        seed=cfg.seed,
        character_coverage=cfg.character_coverage,
        workers=cfg.workers,
    )
