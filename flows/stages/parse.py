"""The parse stage's orchestration: one task per unit, then the manifest (what the units are
and how the manifest is made: `mediswift.stages.parse`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import DownloadManifest
from mediswift.stages import parse as S
from tasks import parse as t
from tasks.common import run_units


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    download = manifests.read(inputs["download"], DownloadManifest)
    specs = S.units(cfg.parse, download, home)
    get_run_logger().info("parse: %d tasks submitted", len(specs))
    results = run_units(t.parse_unit, home, specs)
    manifest = S.collect(cfg.parse, home, inputs["download"], specs, results, get_run_logger())
    return manifests.write(out, manifest)
