"""The pretrain stage: one task per model variant (every size x sparsity level of the recipe).

Each variant is a content-addressed unit under <home>/pretrain/units/<key> (`variant_unit`: the
token output, the pretrain settings that change results and its own sparsity make the key), so
adding a level to a recipe trains only the new variant. Variants run one after another (each
one uses all cores, or `nproc` processes under torchrun). Afterwards the stage draws the loss
curves of all variants (the paper's Figure 2), logs the plot to every variant's MLflow run,
prints a table like Table 2, registers every variant as an MLflow model (once per variant's
run: `tasks.tracking.register_model`) and writes the manifest
(`mediswift.manifests.PretrainManifest`).

MLflow: each variant's run records the token shards (and the document shards they were made
from) as dataset inputs, its loss and cumulative FLOPs per step, and the registered model
`mediswift-<size>-s<pct>` with the alias `recipe-<recipe>` on its newest version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact, stage_artifact, write_atomic
from mediswift.config import PipelineConfig
from mediswift.manifests import FilterManifest, PretrainManifest, TokenizeManifest, VariantRecord
from mediswift.plan import STAGE_VERSIONS, stage_config, variant_unit
from mediswift.tracking import (
    DatasetRef,
    RunLogger,
    Tracker,
    recipe_alias,
    registered_model_name,
    resolve_tracking_uri,
)
from mediswift.train.compare import comparison_markdown, sparsity_gaps, unigram_val_loss
from mediswift.train.pretrain import VariantSpec, variant_name
from mediswift.train.report import plot_loss_curves, table2
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
    pc = cfg.pretrain
    tokens = manifests.read(inputs["tokenize"], TokenizeManifest)
    shards = {
        split: [str(home / s["path"]) for s in tokens.shards if s["split"] == split]
        for split in ("train", "validation")
    }
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    tags = flow_run_tags()
    datasets = [vars(d) for d in consumed_datasets(cfg, home, inputs, tokens)]
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
                nnodes=pc.nnodes,
                rdzv_endpoint=pc.rdzv_endpoint,
                rdzv_id=pc.rdzv_id,
                tracking_uri=uri,
                experiment=cfg.tracking.pretrain_experiment,
                home=str(home),
                tags=tags,
                datasets=datasets,
            )
            .result()
        )
        records.append({**record, "unit": unit.key})
        link_mlflow_run(record["mlflow_run_id"], record["experiment_id"], uri, name)

    out.ensure()
    plot = plot_loss_curves(
        {r["name"]: home / r["loss_curve"] for r in records},
        out.path / "loss_curves.png",
        title=f"Pre-training loss, {', '.join(pc.sizes)} ({pc.sparsity_method} sparsity)",
    )
    unigram = unigram_val_loss(
        [Path(p) for p in shards["train"]], [Path(p) for p in shards["validation"]],
        tokens.vocab_size,
    )  # fmt: skip
    gaps = sparsity_gaps(records, home)
    table = table2(records) + "\n\n" + comparison_markdown(unigram, gaps)
    write_atomic(out.path / "table2.md", table + "\n")
    tracker = Tracker(uri, cfg.tracking.pretrain_experiment, artifact_root=home / "mlruns")
    for r in records:  # the comparison belongs to every variant's run
        RunLogger(tracker.client, r["mlflow_run_id"]).log_artifact(plot)
    print(table)
    log.info("pretrain: Table 2\n%s", table)
    if cfg.tracking.log_models and models_available():
        models = register_variants(cfg, home, uri, inputs["vocab"], records)
    else:
        if cfg.tracking.log_models:
            log.warning("pretrain: %s", MODELS_MISSING)
        models = {}

    variants = [
        VariantRecord.model_validate(
            {k: v for k, v in r.items() if k not in ("experiment_id", "unit")}
            | {"registered_model": models.get(r["name"])}
        )
        for r in records
    ]
    manifest = PretrainManifest(
        variants=variants,
        loss_plot=str(plot.relative_to(home)),
        table=str((out.path / "table2.md").relative_to(home)),
        unigram_val_loss=unigram,
        sparsity_gaps=[vars(g) for g in gaps],
    )
    return manifests.write(out, manifest)


def register_variants(
    cfg: PipelineConfig, home: Path, uri: str, vocab: Artifact, records: list[dict[str, Any]]
) -> dict[str, str]:
    """Every variant as a registered MLflow model (`mediswift-<size>-s<pct>`), its newest
    version marked `recipe-<recipe>`; returns variant name -> `models:/<name>/<version>`."""
    models = {}
    for r in records:
        name = registered_model_name(r["model"], r["sparsity"], r.get("method", "static"))
        card = {
            **{k: v for k, v in r.items() if k not in ("experiment_id", "unit")},
            "recipe": cfg.name,
            "pmc_commercial_only": cfg.download.pmc_commercial_only,
        }
        ref = register_model.submit(
            tracking_uri=uri,
            run_id=r["mlflow_run_id"],
            name=name,
            checkpoint=str(home / r["checkpoint"]),
            tokenizer_dir=str(vocab.path),
            card=card,
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
        ).result()
        models[r["name"]] = ref["uri"]
    return models


def consumed_datasets(
    cfg: PipelineConfig, home: Path, inputs: dict[str, Artifact], tokens: TokenizeManifest
) -> list[DatasetRef]:
    """What every variant trains on, named by content key: the token shards of each split, and
    the document shards (filter output) they were tokenized from."""
    tok = inputs["tokenize"]
    refs = [
        DatasetRef(
            name=f"tokens-{split}",
            digest=tok.key,
            source=str(tok.path.relative_to(home)),
            context="training" if split == "train" else "validation",
            profile={
                "shards": sum(s["split"] == split for s in tokens.shards),
                "documents": tokens.docs.get(split, 0),
                "tokens": tokens.tokens.get(split, 0),
                "tokenizer": tokens.tokenizer_hash,
            },
        )
        for split in ("train", "validation")
    ]
    docs = filter_output(cfg, home, tok, inputs["vocab"])
    if docs is not None:
        counts = manifests.read(docs, FilterManifest).counts
        refs.append(
            DatasetRef(
                name="documents",
                digest=docs.key,
                source=str(docs.path.relative_to(home)),
                context="corpus",
                profile={"documents": counts.get("kept", {})},
            )
        )
    return refs


def filter_output(
    cfg: PipelineConfig, home: Path, tokenize: Artifact, vocab: Artifact
) -> Artifact | None:
    """The filter output that `tokenize` was made from: the one whose key, with the vocab's,
    gives the tokenize key (the pipeline's plan may have keyed download on an upstream listing
    this stage cannot see)."""
    config, version = stage_config(cfg, "tokenize"), STAGE_VERSIONS["tokenize"]
    root = home / "filter"
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        cand = Artifact("filter", path.name, path)
        if path.name == "units" or not cand.done():
            continue
        if stage_artifact(home, "tokenize", config, [cand, vocab], version).key == tokenize.key:
            return cand
    return None
