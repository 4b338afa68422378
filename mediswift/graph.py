"""The stage graph: which outputs each stage reads, and the content key of every stage output.

Keys chain: a stage's key hashes its own config section and its inputs' keys, so a change to one
setting re-keys that stage and everything downstream of it, and nothing upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mediswift.artifacts import (
    MANIFEST,
    Artifact,
    content_key,
    stage_artifact,
    units_dir,
)
from mediswift.config import PipelineConfig
from mediswift.data.pubmed_files import PubmedFile
from mediswift.stage_def import StageDef


def stage_config(cfg: PipelineConfig, stage: str) -> Any:
    section = getattr(cfg, stage).stage_settings()  # how the work runs never re-keys a stage
    if stage in ("download", "finetune"):
        # The mirror decides what is fetched, so it is part of these stages' identity.
        return {"section": section, "mirror": cfg.mirror}
    if stage == "filter" and cfg.filter.decontaminate:
        # The evaluation examples decide what decontamination drops: the tasks and their files
        # are part of the filter's identity (the mirror already is, through download's key).
        return {"section": section, "decontaminate_against": decontamination_sources(cfg)}
    return section


def decontamination_sources(cfg: PipelineConfig) -> dict[str, dict[str, str]]:
    """Task name -> role -> upstream URL of every file of the tasks decontaminated against."""
    return {
        name: {
            "sources": cfg.finetune.task(name).eval_sources(),
            # what else decides which examples are dev and test (e.g. PubMedQA's fold): never
            # settings that only change training, which must not re-key the corpus
            "split": cfg.finetune.task(name).split_settings(),
        }
        for name in sorted(cfg.finetune.tasks)
    }


def plan(
    cfg: PipelineConfig, home: Path, stages: Sequence[StageDef], listing: str | None = None
) -> dict[str, Artifact]:
    """The output artifact of every stage of `stages` (`flows.registry.STAGES`) for this
    config, in stage order.

    `listing`: a digest of the upstream PubMed listing (`download.track_upstream`): new update
    files upstream then re-key the download stage and what follows it."""
    arts: dict[str, Artifact] = {}
    for stage in stages:
        inputs = [arts[s] for s in stage.inputs]
        config = stage_config(cfg, stage.name) if stage.has_section else {}
        if stage.name == "download" and listing is not None:
            config = {**config, "upstream_listing": listing}
        arts[stage.name] = stage_artifact(home, stage.name, config, inputs, stage.version)
    return arts


def listing_digest(files: list[PubmedFile]) -> str:
    """What of the upstream listing identifies the download: every file's kind and name."""
    return content_key(sorted((f.kind, f.name) for f in files))


def reopen(home: Path, output: Artifact) -> int:
    """Make a stage run again, every unit of it: its output and unit manifests are removed
    (units are content-addressed, so recomputing them gives the same content; pre-training
    resumes from a unit's last checkpoint: delete the unit to train afresh). Returns the
    number of units reopened."""
    output.manifest_path.unlink(missing_ok=True)
    units = list(units_dir(home, output.stage).glob(f"*/{MANIFEST}"))
    for m in units:
        m.unlink(missing_ok=True)
    return len(units)
