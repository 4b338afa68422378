"""The vocab stage's orchestration: one task (`mediswift.stages.vocab`), then the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import FilterManifest, VocabManifest
from tasks import vocab as t


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    filtered = manifests.read(inputs["filter"], FilterManifest)
    result = t.learn_vocab.submit(cfg.vocab, str(home), filtered, out).result()
    return manifests.write(out, VocabManifest.model_validate(result))
