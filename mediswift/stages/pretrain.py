"""The pretrain stage: one unit per model variant (every size x sparsity level of the recipe, or
its arms, once per seed: `mediswift.baselines.planned_variants`),
then the comparison of the variants (loss curves, Table 2, the unigram baseline, sparse against
dense at equal steps and equal FLOPs) and the manifest (`PretrainManifest`).

Each variant is a content-addressed unit under `<home>/pretrain/units/<key>`, keyed by its
`VariantSpec` (the token output, the pretrain settings that change results and its own
sparsity), so adding a level to a recipe trains only the new variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mediswift import manifests
from mediswift.artifacts import Artifact, stage_artifact, write_atomic
from mediswift.baselines import planned_variants
from mediswift.config import PipelineConfig
from mediswift.graph import stage_config
from mediswift.manifests import (
    FilterManifest,
    ModelRegistration,
    PretrainManifest,
    TokenizeManifest,
    TrainedVariant,
    VariantRun,
)
from mediswift.names import model_name
from mediswift.stage_def import StageDef
from mediswift.stages.tokenize import STAGE as TOKENIZE
from mediswift.tracking import DatasetRef, RunLogger, Tracker, recipe_alias, resolve_tracking_uri
from mediswift.train.compare import comparison_markdown, sparsity_gaps, unigram_val_loss
from mediswift.train.report import plot_loss_curves, table2
from mediswift.train.variant import VariantSpec

# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs.
# 4: the unigram baseline is scored on the validation loss's own batches, not on every
# validation token.
STAGE = StageDef("pretrain", inputs=("tokenize", "vocab"), manifest=PretrainManifest, version=4)

SPLITS = ("train", "validation")


@dataclass(frozen=True)
class Variant:
    """One variant to train: its unit and everything the training reads."""

    unit: Artifact
    spec: VariantSpec
    iso_flops_of: float | None = None  # a dense baseline at this sparse level's FLOPs
    arm: str | None = None  # the name without its seed (`PlannedVariant.arm`)

    def record(self, trained: VariantRun) -> dict[str, Any]:
        """The trainer's record as the stage lists it: named as planned, with its unit, its
        arm and its seed (the seeds of an arm are what the claims measure noise with)."""
        return {**trained.model_dump(), "name": self.spec.name, "unit": self.unit.key,
                "iso_flops_of": self.iso_flops_of, "arm": self.arm or self.spec.name,
                "seed": self.spec.cfg.seed}  # fmt: skip


def token_shards(home: Path, tokens: TokenizeManifest) -> dict[str, list[str]]:
    return {
        split: [str(home / s.path) for s in tokens.shards if s.split == split] for split in SPLITS
    }


def units(
    cfg: PipelineConfig, home: Path, tokenize: Artifact, tokens: TokenizeManifest
) -> list[Variant]:
    pc, shards = cfg.pretrain, token_shards(home, tokens)
    out = []
    for p in planned_variants(pc, tokens.vocab_size):
        spec = VariantSpec(
            tokens=tokenize.key,
            config=p.config(pc),
            sparsity=p.sparsity,
            name=p.name,
            vocab_size=tokens.vocab_size,
            train_shards=shards["train"],
            val_shards=shards["validation"],
        )
        unit = spec.artifact(home)
        spec = spec.model_copy(update={"out_dir": str(unit.path)})
        out.append(Variant(unit, spec, p.iso_flops_of, p.arm))
    return out


def compare(
    cfg: PipelineConfig,
    home: Path,
    out: Artifact,
    records: list[dict[str, Any]],
    tokens: TokenizeManifest,
) -> tuple[PretrainManifest, str]:
    """Draw the loss curves (Figure 2) and log them to every variant's run, write Table 2 with
    the comparisons; the manifest without registered models (`with_models` adds them) and the
    table's text."""
    pc, shards = cfg.pretrain, token_shards(home, tokens)
    out.ensure()
    plot = plot_loss_curves(
        {r["name"]: home / r["loss_curve"] for r in records},
        out.path / "loss_curves.png",
        title=f"Pre-training loss, {', '.join(pc.sizes)} ({pc.sparsity_method} sparsity)",
    )
    unigram = unigram_val_loss(
        [Path(p) for p in shards["train"]], [Path(p) for p in shards["validation"]],
        tokens.vocab_size, pc.seq_len, pc.micro_batch, pc.eval_batches,
    )  # fmt: skip
    gaps = sparsity_gaps(records, home)
    table = table2(records) + "\n\n" + comparison_markdown(unigram, gaps)
    write_atomic(out.path / "table2.md", table + "\n")
    tracker = Tracker(tracking_uri(cfg, home), cfg.tracking.pretrain_experiment, home / "mlruns")
    for r in records:  # the comparison belongs to every variant's run
        RunLogger(tracker.client, r["mlflow_run_id"]).log_artifact(plot)
    manifest = PretrainManifest(
        variants=[variant_record(r, None) for r in records],
        loss_plot=str(plot.relative_to(home)),
        table=str((out.path / "table2.md").relative_to(home)),
        unigram_val_loss=unigram,
        sparsity_gaps=[vars(g) for g in gaps],
    )
    return manifest, table


def variant_record(record: dict[str, Any], model: str | None) -> TrainedVariant:
    fields = {k: v for k, v in record.items() if k not in ("experiment_id", "unit")}
    return TrainedVariant.model_validate(fields | {"registered_model": model})


def with_models(
    manifest: PretrainManifest, records: list[dict[str, Any]], models: dict[str, str]
) -> PretrainManifest:
    variants = [variant_record(r, models.get(r["name"])) for r in records]
    return manifest.model_copy(update={"variants": variants})


def tracking_uri(cfg: PipelineConfig, home: Path) -> str:
    return resolve_tracking_uri(cfg.tracking.tracking_uri, home)


def registrations(
    cfg: PipelineConfig, home: Path, vocab: Artifact, records: list[dict[str, Any]]
) -> list[ModelRegistration]:
    """Every variant as a model to register (`mediswift-<variant>`, its newest version marked
    `recipe-<recipe>`)."""
    return [
        ModelRegistration(
            tracking_uri=tracking_uri(cfg, home),
            run_id=r["mlflow_run_id"],
            name=model_name(r["name"]),
            checkpoint=str(home / r["checkpoint"]),
            tokenizer_dir=str(vocab.path),
            card=model_card(cfg, r),
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
        )
        for r in records
    ]


def model_card(cfg: PipelineConfig, record: dict[str, Any]) -> dict[str, Any]:
    """What the registered model of a variant says about itself (named as registered)."""
    return {
        **{k: v for k, v in record.items() if k not in ("experiment_id", "unit")},
        "name": model_name(record["name"]),
        "recipe": cfg.name,
        "pmc_commercial_only": cfg.download.pmc_commercial_only,
    }


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
                "shards": sum(s.split == split for s in tokens.shards),
                "documents": tokens.docs.get(split, 0),
                "tokens": tokens.tokens.get(split, 0),
                "tokenizer": tokens.tokenizer_hash,
            },
        )
        for split in SPLITS
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
    config, version = stage_config(cfg, TOKENIZE.name), TOKENIZE.version
    root = home / "filter"
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        cand = Artifact("filter", path.name, path)
        if path.name == "units" or not cand.done():
            continue
        if stage_artifact(home, TOKENIZE.name, config, [cand, vocab], version).key == tokenize.key:
            return cand
    return None
