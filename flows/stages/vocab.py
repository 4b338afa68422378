"""The vocab stage: learn Moses + BPE on the filter stage's train split into the artifact dir.

Manifest: the `vocab` entry of the stage manifests (vocab_size, hash, special_ids,
unk_rate_validation, plus what learning saw). The tokenizer files sit in the artifact directory
itself and load with `Tokenizer.load(<vocab artifact path>)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import FilterManifest, VocabManifest
from tasks import vocab as t
from tasks.common import cached


def doc_shard_paths(home: Path, filter_art: Artifact) -> list[Path]:
    """The filter stage's document shards, in manifest order, checked to exist."""
    paths = [home / s["path"] for s in manifests.read(filter_art, FilterManifest).shards]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"filter output {filter_art.path} lists missing shards: {missing}")
    return paths


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    shards = doc_shard_paths(home, inputs["filter"])
    out.ensure()
    task = cached(t.learn_vocab, home, out)
    result = task.submit(
        key=out.key, doc_shards=[str(p) for p in shards], out_dir=str(out.path), cfg=cfg.vocab
    ).result()
    log.info(
        "vocab: %d entries learned on %d train documents (%d of %d lines); "
        "unk rate on validation %.2e over %d tokens",
        result["vocab_size"],
        result["train_docs"],
        result["sampled_lines"],
        result["train_lines"],
        result["unk_rate_validation"],
        result["validation_tokens"],
    )
    return manifests.write(out, VocabManifest.model_validate(result))
