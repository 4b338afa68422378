"""Vocab tasks: one per unit kind of `mediswift.stages.vocab` (a shard's Moses pass, and the
BPE learning on all of them). Each takes its unit's spec; the unit manifest is written last."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task

from mediswift.stages import vocab as S


@task(name="vocab-moses", task_run_name="vocab-moses-{spec.name}")
def moses_shard(spec: S.MosesSpec, home: str) -> S.MosesResult:
    return S.run_moses(spec, Path(home))


@task(name="learn-vocab", task_run_name="learn-vocab-{spec.vocab.vocab_size}")
def learn_vocab(spec: S.BpeSpec, home: str) -> S.LearnedVocab:
    return S.run_bpe(spec, Path(home), get_run_logger())
