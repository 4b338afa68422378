"""The stage graph: which outputs each stage reads, and the content key of every stage output.

Keys chain: a stage's key hashes its own config section and its inputs' keys, so a change to one
setting re-keys that stage and everything downstream of it, and nothing upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mediswift.artifacts import (
    MANIFEST,
    Artifact,
    content_key,
    stage_artifact,
    unit_artifact,
    units_dir,
)
from mediswift.config import STAGES, PipelineConfig, PretrainConfig

# Stage -> the stages whose outputs it reads.
STAGE_INPUTS: dict[str, tuple[str, ...]] = {
    "download": (),
    "parse": ("download",),
    "filter": ("parse",),
    "vocab": ("filter",),
    "tokenize": ("filter", "vocab"),
    "pretrain": ("tokenize", "vocab"),
    "finetune": ("pretrain", "vocab"),
    "evaluate": ("finetune", "pretrain"),
}

# Bump a stage's version when its output format or semantics change: it re-keys the stage.
# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs. pretrain 4: the unigram
# baseline is scored on the validation loss's own batches, not on every validation token.
# evaluate 4: a task's extra metrics (HoC in BioGPT's convention) beside each selection.
STAGE_VERSIONS: dict[str, int] = {**dict.fromkeys(STAGES, 3), "pretrain": 4, "evaluate": 4}


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


def plan(cfg: PipelineConfig, home: Path, listing: str | None = None) -> dict[str, Artifact]:
    """The output artifact of every stage for this config, in stage order.

    `listing`: a digest of the upstream PubMed listing (`download.track_upstream`): new update
    files upstream then re-key the download stage and what follows it."""
    arts: dict[str, Artifact] = {}
    for stage in STAGES:
        inputs = [arts[s] for s in STAGE_INPUTS[stage]]
        config = stage_config(cfg, stage)
        if stage == "download" and listing is not None:
            config = {**config, "upstream_listing": listing}
        arts[stage] = stage_artifact(home, stage, config, inputs, STAGE_VERSIONS[stage])
    return arts


def listing_digest(files: list[dict[str, Any]]) -> str:
    """What of the upstream listing identifies the download: every file's kind and name."""
    return content_key(sorted((f["kind"], f["name"]) for f in files))


# Bump when a variant's content or meaning changes (model, loop, checkpoint format).
# 3: the device is a schedule setting (as in fine-tuning): it no longer re-keys a variant.
# Checkpoint format 2 (sparse matrices as kept values + bits) did not bump it: the trained
# weights are the same bits and format 1 checkpoints still load, resume and export, so a
# variant trained before it stays done (its record just has no checkpoint sizes).
VARIANT_VERSION = 3


def variant_unit(home: Path, tokenize_key: str, cfg: PretrainConfig, sparsity: float) -> Artifact:
    """One pre-trained variant: its tokens, the settings that change results, its sparsity."""
    return unit_artifact(
        home, "pretrain", VARIANT_VERSION, tokenize_key, cfg.result_settings(), sparsity
    )


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


def parse_stages(stages: str | list[str] | None) -> list[str]:
    """Normalise a stage selection ('download,parse' or a list; None = all) into stage order."""
    if stages is None or stages == "" or stages == "all" or stages == ["all"]:
        return list(STAGES)
    items = stages.split(",") if isinstance(stages, str) else list(stages)
    wanted = [s.strip() for s in items if s.strip()]
    unknown = [s for s in wanted if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}")
    return [s for s in STAGES if s in wanted]
