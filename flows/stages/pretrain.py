"""The pretrain stage: one task per model variant (every size x sparsity level of the recipe).

Each variant is a content-addressed unit under <home>/pretrain/units/<key> (`variant_unit`: the
token output, the pretrain settings that change results and its own sparsity make the key), so
adding a level to a recipe trains only the new variant. Variants run one after another (each
one uses all cores, or `nproc` processes under torchrun). Afterwards the stage draws the loss
curves of all variants (the paper's Figure 2), logs the plot to every variant's MLflow run,
prints a table like Table 2, and writes the manifest (`mediswift.manifests.PretrainManifest`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact, write_atomic
from mediswift.config import PipelineConfig
from mediswift.manifests import PretrainManifest, TokenizeManifest, VariantRecord
from mediswift.plan import variant_unit
from mediswift.tracking import RunLogger, Tracker, resolve_tracking_uri
from mediswift.train.pretrain import VariantSpec, variant_name
from mediswift.train.report import plot_loss_curves, table2
from tasks import pretrain as t
from tasks.common import cached
from tasks.tracking import flow_run_tags, link_mlflow_run


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    pc = cfg.pretrain
    tokens = manifests.read(inputs["tokenize"], TokenizeManifest)
    shards = {
        split: [str(home / s["path"]) for s in tokens.shards if s["split"] == split]
        for split in ("train", "validation")
    }
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    tags = flow_run_tags()
    records = []
    variants = [(pc.for_size(size), s) for size in pc.sizes for s in pc.sparsity_levels]
    for one, s in variants:
        unit = variant_unit(home, inputs["tokenize"].key, one, s)
        name = variant_name(one.model, s, pc.sparsity_method)
        spec = VariantSpec(
            name=name,
            config=one.model_dump(mode="json"),
            sparsity=s,
            vocab_size=tokens.vocab_size,
            out_dir=str(unit.path),
            train_shards=shards["train"],
            val_shards=shards["validation"],
        )
        log.info("pretrain: %s (%s) -> %s", name, unit.key, unit.path)
        record = (
            cached(t.pretrain_variant, home, unit)
            .submit(
                key=unit.key,
                name=name,
                spec_json=spec.to_json(),
                nproc=pc.nproc,
                tracking_uri=uri,
                experiment=cfg.tracking.pretrain_experiment,
                home=str(home),
                tags=tags,
            )
            .result()
        )
        records.append(record)
        link_mlflow_run(record["mlflow_run_id"], record["experiment_id"], uri, name)

    out.ensure()
    plot = plot_loss_curves(
        {r["name"]: Path(r["loss_curve"]) for r in records},
        out.path / "loss_curves.png",
        title=f"Pre-training loss, {', '.join(pc.sizes)} ({pc.sparsity_method} sparsity)",
    )
    table = table2(records)
    write_atomic(out.path / "table2.md", table + "\n")
    tracker = Tracker(uri, cfg.tracking.pretrain_experiment, artifact_root=home / "mlruns")
    for r in records:  # the comparison belongs to every variant's run
        RunLogger(tracker.client, r["mlflow_run_id"]).log_artifact(plot)
    print(table)
    log.info("pretrain: Table 2\n%s", table)

    def rel(p: str) -> str:
        return str(Path(p).resolve().relative_to(home.resolve()))

    variants = [
        VariantRecord.model_validate(
            {k: v for k, v in r.items() if k != "experiment_id"}
            | {"checkpoint": rel(r["checkpoint"]), "loss_curve": rel(r["loss_curve"])}
        )
        for r in records
    ]
    manifest = PretrainManifest(
        variants=variants, loss_plot=rel(str(plot)), table=rel(str(out.path / "table2.md"))
    )
    return manifests.write(out, manifest)
