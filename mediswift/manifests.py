"""The contracts between stages: one model per stage manifest and per unit spec.

A stage writes its manifest through its model (`write`) and the next stage reads it through the
same model (`read`), so a field renamed on one side fails at once, by name, on the other. Paths
in manifests are relative to the home unless said otherwise. `reference()` renders these models
as the stage-manifest reference (`docs/manifests.md`, checked by a test to be current).

Entries whose shape belongs to one library function (a PubMed file record, a shard record) are
kept as JSON objects here and documented where they are made; the stage-level structure is
typed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from mediswift.artifacts import Artifact

Record = dict[str, Any]
M = TypeVar("M", bound="Manifest")


class Manifest(BaseModel):
    """Base of every stage manifest: `stage` and `key` are added by `Artifact.write_manifest`."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field("", description="the stage that wrote it")
    key: str = Field("", description="the output's content key")


def read(art: Artifact, model: type[M]) -> M:
    """The manifest of `art` as `model` (a missing manifest says which stage to run first)."""
    try:
        return model.model_validate(art.manifest())
    except ValueError as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{art.manifest_path}: not a {model.__name__}: {e}") from e


def write(art: Artifact, manifest: Manifest) -> Record:
    """Write `manifest` as `art`'s manifest, last: the artifact is done after this."""
    data = manifest.model_dump(mode="json", exclude={"stage", "key"})
    return art.ensure().write_manifest(data)


# -- data stages ----------------------------------------------------------------------------
class DownloadManifest(Manifest):
    """Raw files under `<home>/raw` in upstream layout, md5-verified."""

    pubmed: list[Record] = Field(
        description="PubMed files in apply order: name, kind (baseline/update), path, md5, bytes"
    )
    pmc: list[Record] = Field(description="PMC articles: pmcid, version, path, metadata, license")
    corpora: list[Record] = Field(description="extra JSONL corpora: path, name, source, records")
    counts: dict[str, int] = Field(description="files, articles, bytes and records by kind")
    skipped: dict[str, dict[str, int]] = Field(description="PMC articles left out, by reason")


class ParseManifest(Manifest):
    """Document Parquet shards, one or more per input file."""

    shards: list[Record] = Field(description="document shards: path, source, rows, input file")
    deleted_pmids: list[str] = Field(description="PMIDs deleted by update files (in order)")
    quarantined: list[Record] = Field(description="input files skipped with on_error=quarantine")
    counts: dict[str, Any] = Field(description="documents, shards, quarantined, per-source counts")


class FilterManifest(Manifest):
    """Filtered document shards with their `split`, and why documents were dropped."""

    shards: list[Record] = Field(description="filtered shards: path, split, rows")
    counts: dict[str, Any] = Field(
        description="input, kept per split, dropped per reason and, with max_revised, "
        "revised_after_by_year (publication year -> PubMed records the snapshot dropped)"
    )
    rules: Record = Field(
        default_factory=dict,
        description="the optional rules applied: max_year (cut-off, publication year), "
        "max_revised (snapshot date: PubMed by DateRevised, PMC by publication date), "
        "pmc_overlap and pmc_overlap_rule, decontaminate, contamination_ngram (words), "
        "decontaminate_mode, contamination_max_docs",
    )
    contamination: Record | None = Field(
        None,
        description="decontamination (None: off): ngram, mode, max_docs, tasks, examples, "
        "checked and too_short (per task and split), boilerplate_ngrams (ignored), documents "
        "(holding a counted n-gram), dropped, cut (window mode), spared (only boilerplate "
        "shared), chars_removed, found (task, split, id, documents, first doc_ids)",
    )


class VocabManifest(Manifest):
    """The tokenizer (Moses + BPE) in the stage directory."""

    model_config = ConfigDict(extra="allow")  # the tokenizer's own facts (see text/bpe.py)

    hash: str = Field(description="content hash of the tokenizer files")
    vocab_size: int = Field(description="BPE entries, specials included")


class TokenShard(BaseModel):
    """One split of a document shard as token ids."""

    path: str = Field(description="token Parquet shard (relative to home)")
    split: str = Field(description="train or validation")
    n_docs: int
    n_tokens: int


class TokenizeManifest(Manifest):
    """Token Parquet shards of every document."""

    shards: list[TokenShard] = Field(description="token shards, each one split of a document shard")
    tokens: dict[str, int] = Field(description="tokens per split")
    docs: dict[str, int] = Field(description="documents per split")
    tokenizer_hash: str = Field(description="the vocab stage's tokenizer hash")
    vocab_size: int = Field(description="BPE entries, specials included")


# -- pre-training ---------------------------------------------------------------------------
class TrainedVariant(BaseModel):
    """One pre-trained variant, as the pretrain stage lists it."""

    model_config = ConfigDict(extra="allow")  # the variant's own facts (FLOPs, timings...)

    name: str = Field(description="e.g. tiny-s75, tiny-dense (`mediswift.names.variant_name`)")
    model: str = Field(description="size name")
    sparsity: float = Field(description="fraction of zero weights")
    checkpoint: str = Field(description="final checkpoint directory")
    loss_curve: str = Field(description="CSV of the loss curve")
    mlflow_run_id: str | None = Field(None, description="the variant's MLflow run")
    registered_model: str | None = Field(
        None, description="its registered MLflow model version, models:/<name>/<version>"
    )
    train_flops: float = Field(description="training FLOPs (Hoffmann et al. 2022)")
    active_params: int = Field(description="parameters active during pre-training")
    active_non_embedding_params: int = Field(description="the paper's 'size' column")
    iso_flops_of: float | None = Field(
        None, description="a dense baseline trained at this sparse level's FLOPs (else None)"
    )
    checkpoint_bytes: int | None = Field(
        None, description="bytes on disk of the final checkpoint (weights + masks)"
    )
    resume_checkpoint_bytes: int | None = Field(
        None, description="bytes on disk of a resumable checkpoint (+ AdamW moments, RNG, loader)"
    )


class VariantRun(TrainedVariant):
    """What training one variant returns: its record and the MLflow run it logged to."""

    mlflow_run_id: str = Field(description="the variant's MLflow run")
    experiment_id: str = Field(description="the run's MLflow experiment")


class PretrainManifest(Manifest):
    """Every pre-trained variant of the recipe's model size, with Figure 2 and Table 2."""

    variants: list[TrainedVariant] = Field(description="one per sparsity level")
    loss_plot: str = Field(description="PNG of every variant's loss curve (Figure 2)")
    table: str = Field(description="Table 2 as Markdown")
    unigram_val_loss: float | None = Field(
        None, description="validation loss of the train split's unigram distribution (nats)"
    )
    sparsity_gaps: list[dict[str, Any]] = Field(
        default_factory=list,
        description="each sparse variant against dense at equal steps and equal FLOPs",
    )


# -- fine-tuning ----------------------------------------------------------------------------
class TrackingSpec(BaseModel):
    """Where a unit logs to MLflow."""

    uri: str | None = Field(
        description="MLflow tracking URI; None: the store of the home the unit runs in"
    )
    experiment: str = Field(description="MLflow experiment name")
    parent_run_id: str | None = Field(None, description="the sweep's parent run")
    tags: dict[str, str] = Field(default_factory=dict, description="tags of every run")


# A pre-trained model's input example: the start of a biomedical sentence to continue.
PRETRAIN_EXAMPLE = "Aspirin reduces the risk of"


class ModelRegistration(BaseModel):
    """A model to log from a finished MLflow run and register as a version of `name` (a
    pre-trained variant, a sweep's selected point): what the pretrain and evaluate stages hand
    to `tasks.tracking.register_model`."""

    tracking_uri: str
    run_id: str
    name: str = Field(description="the registered model")
    checkpoint: str = Field(description="the checkpoint to export (absolute)")
    tokenizer_dir: str
    card: Record = Field(description="what the model card says about the model")
    prompt: str | None = Field(None, description="a fine-tuned point's soft prompt file")
    input_example: str = PRETRAIN_EXAMPLE
    trained_len: int | None = Field(None, description="positions the weights were trained on")
    source_budget: int | None = Field(None, description="source tokens a point reads")
    max_new_tokens: int | None = Field(None, description="tokens a point generates")
    aliases: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    description: str | None = None


class RegisteredModel(BaseModel):
    """A registered model version."""

    name: str
    version: str
    model_id: str | None = None
    uri: str = Field(description="models:/<name>/<version>")


class Baseline(BaseModel):
    """The task's trivial baseline learned on train, scored on dev and test: the majority class
    for classification tasks, the training pairs found in the text for relation tasks (the
    task's `baseline_name`)."""

    label: Any = Field(description="what the baseline predicts (the majority class, or a rule)")
    dev: float
    test: float
    test_ci95: tuple[float, float] | None = Field(
        None, description="95% bootstrap interval over test examples"
    )


class TaskDataInfo(BaseModel):
    """One task's prepared data, as the finetune stage lists it."""

    data: str = Field(description="the task's data unit (relative to home)")
    metric: str = Field(description="name of the task metric")
    counts: dict[str, int] = Field(description="examples per split, after caps")
    full_counts: dict[str, int] = Field(description="examples per split, before caps")
    majority: Baseline
    stages: list[str] = Field(description="training schedule, in order")


class PointResult(BaseModel):
    """One finished grid point."""

    unit: str = Field(description="the point's unit (relative to home)")
    batch_size: int
    lr: float
    seed: int
    metrics: dict[str, float] = Field(description="<split>_<mode>[_<extra>] on dev and test")
    steps: int
    best_epoch: int
    mlflow_run_id: str | None = None
    degenerate: dict[str, str] = Field(
        default_factory=dict, description="<split>_<mode> -> 'constant' or 'no label'"
    )


class StageChoice(BaseModel):
    """An earlier stage of a multi-stage sweep: its grid, and the (batch, lr) chosen there."""

    stage: str
    after: str | None = Field(None, description="stage whose chosen units it starts from")
    labels_from: str | None = Field(
        None, description="stage whose chosen units pseudo-label its training items"
    )
    batch_size: int
    lr: float
    dev_mean: float = Field(description="mean over seeds of the units' best dev metric")
    chosen: list[str] = Field(description="its units at the choice, one per seed")
    units: list[str] = Field(description="every unit of its grid (relative to home)")
    labels: list[str] = Field(
        default_factory=list, description="labels units its chosen units made, one per seed"
    )
    degenerate_seeds: int = Field(0, description="seeds of the choice with degenerate dev output")
    avoided_degenerate: int = Field(
        0, description="(batch, lr) passed over because a seed was degenerate on dev"
    )
    degenerate_labels: dict[str, str] = Field(
        default_factory=dict,
        description="seed -> why its labels are degenerate ('constant' or 'no label')",
    )


class Sweep(BaseModel):
    """The grid points of one (variant, task)."""

    variant: str
    task: str
    metric: str
    parent_run_id: str | None = None
    points: list[PointResult]
    stages: list[StageChoice] = Field(
        default_factory=list,
        description="a multi-stage sweep's stages before the last (whose grid `points` is)",
    )


class FinetuneManifest(Manifest):
    """Every task's prepared data and every (variant, task) sweep with its grid points."""

    tasks: dict[str, TaskDataInfo] = Field(description="task name -> its prepared data")
    sweeps: list[Sweep] = Field(description="one per (variant, task)")
    modes: list[str] = Field(description="prediction modes every point was evaluated in")
    torch_threads: int = Field(description="torch threads per grid point")


# -- evaluation -----------------------------------------------------------------------------
class ExtraScore(BaseModel):
    """An extra test metric of the task (e.g. HoC in BioGPT's convention) at the choice.

    One of the task's `extra_metrics`, scored from the chosen seeds' saved test predictions; it
    never takes part in the choice."""

    label: str = Field(description="how the tables name it")
    test_mean: float
    test_std: float
    test_per_seed: list[float] = Field(description="in the order of the selection's seeds")
    test_ci95: tuple[float, float] | None = Field(
        None, description="95% bootstrap interval over test examples of the seed-mean metric"
    )


class Selection(BaseModel):
    """The (batch, lr) chosen on mean dev metric over seeds, with test mean/std there."""

    batch_size: int
    lr: float
    seeds: list[int]
    test_mean: float
    test_std: float
    dev_mean: float
    dev_std: float
    test_per_seed: list[float]
    dev_per_seed: list[float]
    degenerate_seeds: int = Field(0, description="seeds of the choice with degenerate output")
    avoided_degenerate: int = Field(
        0, description="(batch, lr) passed over because a seed was degenerate on dev"
    )
    test_ci95: tuple[float, float] | None = Field(
        None, description="95% bootstrap interval over test examples of the seed-mean metric"
    )
    extra_metrics: dict[str, ExtraScore] = Field(
        default_factory=dict,
        description="the task's extra metric name -> its test score (when predictions are kept)",
    )


class SelectedPoint(BaseModel):
    """The one grid point a sweep stands for: the chosen (batch, lr), its best seed on dev."""

    mode: str = Field(description="prediction mode the choice was made in")
    batch_size: int
    lr: float
    seed: int
    unit: str = Field(description="the point's unit (relative to home)")
    mlflow_run_id: str | None = Field(None, description="the point's (child) MLflow run")
    registered_model: str | None = Field(
        None, description="its registered MLflow model version, models:/<name>/<version>"
    )


class EvaluatedSweep(BaseModel):
    """One (variant, task) after selection."""

    variant: str
    model: str = Field(description="size name")
    task: str
    metric: str
    sparsity: float
    active_non_embedding_params: int
    train_flops: float
    majority_test: float
    majority_test_ci95: tuple[float, float] | None = None
    parent_run_id: str | None = None
    selected: dict[str, Selection] = Field(description="prediction mode -> the chosen point")
    selected_point: SelectedPoint | None = Field(
        None, description="the point logged and registered as this sweep's model"
    )


class TableFiles(BaseModel):
    """A task's table as Markdown and CSV."""

    md: str
    csv: str


class FlowRunRef(BaseModel):
    """The Prefect flow run that made an output, and where to find it again."""

    id: str
    name: str
    ui: str | None = Field(None, description="the Prefect server's UI it ran on (None: none)")
    prefect_home: str | None = Field(
        None, description="PREFECT_HOME of the run (a temporary server keeps its runs there)"
    )


class EvaluateManifest(Manifest):
    """The selected results, one table per task and the metric-vs-FLOPs plot."""

    tables: dict[str, TableFiles] = Field(description="task -> its table (in this directory)")
    plot: str = Field(description="metric vs pre-training FLOPs (PNG, in this directory)")
    size_plot: str | None = Field(
        None, description="Figure 1: metric vs model size, a line per sparsity (PNG)"
    )
    plot_mode: str = Field(description="prediction mode drawn in the plot")
    modes: list[str] = Field(description="prediction modes reported")
    results: list[EvaluatedSweep]
    mlflow_run_id: str | None = None
    flow_run: FlowRunRef | None = Field(
        None, description="the Prefect flow run that evaluated (the report links it)"
    )


def reference(
    stages: Sequence[tuple[str, type[Manifest]]], specs: Sequence[type[BaseModel]] = ()
) -> str:
    """The stage-manifest reference (Markdown), generated from every stage's manifest model
    (`(name, model)` in pipeline order: `flows.registry.STAGES`) and the unit `specs` given
    (they live with their stages, above this module)."""
    lines = ["# Stage manifests", "", "Generated from `mediswift/manifests.py`.", ""]
    seen: set[type[BaseModel]] = set()

    def section(title: str, model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        doc = (model.__doc__ or "").strip().splitlines() or [""]
        lines.extend([f"## {title}", "", doc[0], ""])
        lines.extend(["| field | type | meaning |", "|---|---|---|"])
        nested = []
        for name, f in model.model_fields.items():
            if name in ("stage", "key") and issubclass(model, Manifest):
                continue
            ann = _type_name(f.annotation)
            lines.append(f"| `{name}` | `{ann}` | {f.description or ''} |")
            nested += [m for m in _models_in(f.annotation) if m not in seen]
        lines.append("")
        for m in nested:
            section(m.__name__, m)

    for stage, model in stages:
        section(f"{stage} (`{model.__name__}`)", model)
    for spec in specs:
        section(f"unit spec `{spec.__name__}`", spec)
    return "\n".join(line for line in lines) + "\n"


def _type_name(ann: Any) -> str:
    text = getattr(ann, "__name__", None) if not getattr(ann, "__args__", None) else None
    text = text or str(ann).replace("typing.", "").replace("mediswift.manifests.", "")
    return text.replace("|", "\\|")  # inside a Markdown table cell


def _models_in(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in getattr(ann, "__args__", ()) or () for m in _models_in(a)]
