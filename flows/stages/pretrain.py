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
from mediswift.names import model_name
from mediswift.stages import pretrain as S
from mediswift.tracking import Tracker, recipe_alias, resolve_tracking_uri
from tasks import pretrain as t
from tasks.common import cached
from tasks.tracking import (
    MODELS_MISSING,
    flow_run_tags,
    link_mlflow_run,
    models_available,
    register_model,
)


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    tokens = manifests.read(inputs["tokenize"], TokenizeManifest)
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    experiment = cfg.tracking.pretrain_experiment
    datasets = [vars(d) for d in S.consumed_datasets(cfg, home, inputs, tokens)]
    records = []
    for v in S.units(cfg, home, inputs["tokenize"], tokens):
        log.info("pretrain: %s (%s) -> %s", v.spec.name, v.unit.key, v.unit.path)
        record = (
            cached(t.pretrain_variant, home, v.unit)
            .submit(key=v.unit.key, spec=v.spec, pretrain=cfg.pretrain, tracking_uri=uri,
                    experiment=experiment, home=str(home), tags=flow_run_tags(), datasets=datasets)
            .result()
        )  # fmt: skip
        records.append(v.record(record))
        link_mlflow_run(record["mlflow_run_id"], record["experiment_id"], uri, v.spec.name)
    tracker = Tracker(uri, experiment, artifact_root=home / "mlruns")
    manifest, table = S.compare(cfg, home, out, records, tokens, tracker)
    # Once, through the run's logger (timestamped, and in the run's log file).
    log.info("pretrain: Table 2\n%s", table)
    models = register_variants(cfg, home, uri, inputs["vocab"], records)
    return manifests.write(out, S.with_models(manifest, records, models))


def register_variants(
    cfg: PipelineConfig, home: Path, uri: str, vocab: Artifact, records: list[dict[str, Any]]
) -> dict[str, str]:
    """Every variant as a registered MLflow model; variant name -> `models:/<name>/<version>`."""
    if not (cfg.tracking.log_models and models_available()):
        if cfg.tracking.log_models:
            get_run_logger().warning("pretrain: %s", MODELS_MISSING)
        return {}
    return {
        r["name"]: register_model.submit(
            tracking_uri=uri,
            run_id=r["mlflow_run_id"],
            name=model_name(r["name"]),
            checkpoint=str(home / r["checkpoint"]),
            tokenizer_dir=str(vocab.path),
            card=S.model_card(cfg, r),
            trained_len=cfg.pretrain.seq_len,  # positions past it were never trained
            aliases=[recipe_alias(cfg.name)],
            tags={
                "mediswift.variant": r["name"],
                "mediswift.recipe": cfg.name,
                "mediswift.unit": r["unit"],
                "sparsity": str(r["sparsity"]),
                "train_flops": f"{r['train_flops']:.4g}",
            },
            description=(
                f"{r['name']}: {r['model']} GPT pre-trained at {r['sparsity']:.0%} sparsity "
                f"({r.get('method', 'static')}), {r['train_flops']:.3g} training FLOPs; "
                f"recipe {cfg.name}, unit {r['unit']}."
            ),
        ).result()["uri"]  # fmt: skip
        for r in records  # one at a time: each writes the registry
    }
