"""The vocab stage: one unit, the stage output itself: Moses + BPE learned on the filter
output's train split. The tokenizer files sit in the output directory and load with
`Tokenizer.load(<vocab output>)`; the manifest is `VocabManifest`."""

from __future__ import annotations

import logging
from pathlib import Path

from mediswift.artifacts import Artifact
from mediswift.manifests import FilterManifest, VocabManifest
from mediswift.settings import VocabConfig
from mediswift.text.vocab import build_vocab

log = logging.getLogger(__name__)


def doc_shard_paths(home: Path, filtered: FilterManifest) -> list[Path]:
    """The filter output's document shards, in manifest order, checked to exist."""
    paths = [home / s["path"] for s in filtered.shards]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the filter output lists missing shards: {missing}")
    return paths


def run_unit(
    cfg: VocabConfig,
    home: Path,
    filtered: FilterManifest,
    out: Artifact,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> VocabManifest:
    """Learn the vocabulary into `out` (the stage output; the caller writes the manifest)."""
    result = build_vocab(
        doc_shard_paths(home, filtered),
        out.ensure().path,
        vocab_size=cfg.vocab_size,
        sample_sentences=cfg.sample_sentences,
        seed=cfg.seed,
        character_coverage=cfg.character_coverage,
        workers=cfg.workers,
    )
    logger.info(
        "vocab: %d entries learned on %d train documents (%d of %d lines); "
        "unk rate on validation %.2e over %d tokens",
        result["vocab_size"], result["train_docs"], result["sampled_lines"],
        result["train_lines"], result["unk_rate_validation"], result["validation_tokens"],
    )  # fmt: skip
    return VocabManifest.model_validate(result)
