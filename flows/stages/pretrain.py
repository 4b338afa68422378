"""The pretrain stage's orchestration: one task per variant, one after another (each uses all
cores, or `nproc` processes under torchrun), then the comparison and, when the recipe logs
models, every variant registered as an MLflow model (`mediswift-<variant>`, e.g.
`mediswift-tiny-dense`, its newest version marked `recipe-<recipe>`). What the units are and
how they compare: `mediswift.stages.pretrain`.

MLflow: each variant's run records the token shards (and the document shards they were made
from) as dataset inputs, its loss and cumulative FLOPs per step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import TokenizeManifest
from mediswift.stages import pretrain as S
from tasks import pretrain as t
from tasks.common import cached
from tasks.tracking import (
    MODELS_MISSING,
    flow_run_tags,
    link_mlflow_run,
    models_available,
    register_models,
)


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    tokens = manifests.read(inputs["tokenize"], TokenizeManifest)
    datasets = [vars(d) for d in S.consumed_datasets(cfg, home, inputs, tokens)]
    records = []
    for v in S.units(cfg, home, inputs["tokenize"], tokens):
        log.info("pretrain: %s (%s) -> %s", v.spec.name, v.unit.key, v.unit.path)
        trained = (
            cached(t.pretrain_variant, home, v.unit)
            .submit(key=v.unit.key, spec=v.spec, pretrain=cfg.pretrain, tracking=cfg.tracking,
                    home=str(home), tags=flow_run_tags(), datasets=datasets)
            .result()
        )  # fmt: skip
        records.append(v.record(trained))
        uri = S.tracking_uri(cfg, home)
        link_mlflow_run(trained.mlflow_run_id, trained.experiment_id, uri, v.spec.name)
    manifest, table = S.compare(cfg, home, out, records, tokens)
    # Once, through the run's logger (timestamped, and in the run's log file).
    log.info("pretrain: Table 2\n%s", table)
    models = register_variants(cfg, home, inputs["vocab"], records)
    return manifests.write(out, S.with_models(manifest, records, models))


def register_variants(
    cfg: PipelineConfig, home: Path, vocab: Artifact, records: list[dict[str, Any]]
) -> dict[str, str]:
    """Every variant as a registered MLflow model; variant name -> `models:/<name>/<version>`."""
    if not (cfg.tracking.log_models and models_available()):
        if cfg.tracking.log_models:
            get_run_logger().warning("pretrain: %s", MODELS_MISSING)
        return {}
    done = register_models(S.registrations(cfg, home, vocab, records))
    return {r["name"]: m.uri for r, m in zip(records, done, strict=True)}
