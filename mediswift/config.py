"""Typed configuration: one pydantic model per stage, composed into `PipelineConfig`.

Recipes are YAML files in `deployments/recipes/` whose top-level keys are the stage names
below; anything a recipe leaves out takes the defaults here, which follow the paper.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

STAGES: tuple[str, ...] = (
    "download",
    "parse",
    "filter",
    "vocab",
    "tokenize",
    "pretrain",
    "finetune",
    "evaluate",
)

# Real upstream bases and the folder of a mirror that stands for each (same relative layout).
UPSTREAMS: dict[str, str] = {
    "https://ftp.ncbi.nlm.nih.gov/pubmed/": "pubmed/",
    "https://pmc-oa-opendata.s3.amazonaws.com/": "pmc/",
    "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/": "pubmedqa/",
    # BLURB's processed HoC files, as published in a public repository of the BLURB pipeline.
    "https://raw.githubusercontent.com/hieunguyen7337/KeBioLM/bc7c3667c786236252ba5b26b3b921197465b7a3/data/HoC/": "hoc/",
}

RECIPES_DIR = Path(__file__).resolve().parent.parent / "deployments" / "recipes"


class _Section(BaseModel):
    # Unknown keys are typos in a recipe: refuse them instead of silently ignoring them.
    model_config = ConfigDict(extra="forbid")


class DownloadConfig(_Section):
    pubmed_url: str = "https://ftp.ncbi.nlm.nih.gov/pubmed/"
    pubmed_max_files: int | None = Field(
        None, ge=0, description="baseline files to take (None: all)"
    )
    pubmed_include_updates: bool = True
    pubmed_max_update_files: int | None = Field(None, ge=0)
    pmc_url: str = "https://pmc-oa-opendata.s3.amazonaws.com/"
    pmc_max_articles: int | None = Field(None, ge=0)
    pmc_commercial_only: bool = False
    pubmedqa_url: str = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data/"
    hoc_url: str = next(k for k, v in UPSTREAMS.items() if v == "hoc/")
    extra_corpora: list[str] = Field(
        default_factory=list,
        description="JSONL files (id, text, optional title): URLs, or paths; a relative path "
        "is looked up in the mirror first",
    )
    max_connections: int = Field(3, ge=1, description="parallel connections per host")
    contact_email: str = "mediswift-users@example.org"
    timeout_s: float = 60.0
    max_retries: int = Field(6, ge=0, description="in-process retries of a transient fault")
    backoff_s: float = Field(1.0, ge=0, description="first retry waits up to this (doubling)")
    backoff_max_s: float = Field(60.0, ge=0)
    pmc_batch_size: int = Field(50, ge=1, description="PMC articles per download task")


class ParseConfig(_Section):
    on_error: Literal["fail", "quarantine"] = Field(
        "fail", description="a bad input file fails its task, or is listed and skipped"
    )
    rows_per_shard: int = Field(
        50_000, ge=1, description="a file with more documents is cut into several shards"
    )
    pmc_articles_per_shard: int = Field(
        1_000, ge=1, description="PMC articles per shard and per parse task"
    )


class FilterConfig(_Section):
    min_abstract_chars: int = 1
    languages: list[str] | None = Field(None, description="keep only these (e.g. ['eng'])")
    validation_fraction: float = Field(0.03, ge=0.0, lt=1.0)
    split_salt: str = "mediswift"


class VocabConfig(_Section):
    vocab_size: int = Field(42_384, ge=16, description="BPE entries, specials included")
    sample_sentences: int = Field(
        2_000_000, ge=0, description="Moses-tokenized train lines sampled for BPE (0: all)"
    )
    seed: int = Field(0, description="seed of the line sample")
    character_coverage: float = Field(0.9999, gt=0.0, le=1.0)
    workers: int = Field(
        2, ge=1, description="processes for the Moses pass (the vocabulary does not depend on it)"
    )


class TokenizeConfig(_Section):
    workers: int = Field(2, ge=1, description="worker processes (ProcessPoolTaskRunner)")
    dask_address: str | None = Field(
        None, description="Dask scheduler (tcp://host:8786): run the shard tasks on that cluster"
    )


class PretrainConfig(_Section):
    model: str = "tiny"
    sparsity_levels: list[float] = Field(default_factory=lambda: [0.0, 0.5, 0.75])
    sparsity_method: Literal["static", "set", "rigl"] = "static"
    sparsity_update_every: int = 100
    sparsity_drop_fraction: float = 0.3
    seq_len: int = 1024
    global_batch: int = 512
    micro_batch: int = 8
    steps: int = 200_000
    lr: float = 2e-4
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    dropout: float = 0.0
    eval_every: int = 1000
    eval_batches: int = 20
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0
    compile: bool = False
    nproc: int = Field(1, ge=1, description="processes under torchrun (DDP)")
    fsdp: bool = False
    device: str = "auto"
    block_size: int = Field(1024, description="learned positions (context window); >= seq_len")
    sparsity_stop_fraction: float = Field(
        0.75, gt=0.0, le=1.0, description="dynamic sparsity: fraction of steps with mask updates"
    )
    keep_checkpoints: int = Field(2, ge=1, description="periodic checkpoints kept per variant")
    measure_peak: bool = Field(True, description="time a matmul to report achieved/peak FLOP/s")
    torch_threads: int = Field(0, ge=0, description="CPU threads per process (0: torch default)")


class TaskGrid(_Section):
    batch_sizes: list[int]
    learning_rates: list[float]


class FinetuneConfig(_Section):
    tasks: list[Literal["pubmedqa", "hoc"]] = Field(default_factory=lambda: ["pubmedqa", "hoc"])
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    pubmedqa_grid: TaskGrid = TaskGrid(
        batch_sizes=[8, 16, 32, 64], learning_rates=[2e-4, 1e-4, 5e-5, 2.5e-5]
    )
    hoc_grid: TaskGrid = TaskGrid(batch_sizes=[16, 32, 64], learning_rates=[8e-5, 4e-5, 2e-5, 1e-5])
    pubmedqa_epochs: int = 5
    hoc_epochs: int = 100
    pubmedqa_prompt_tokens: int = 9
    hoc_prompt_tokens: int = 1
    patience: int = 3
    loss_on: Literal["target", "sequence"] = "target"
    max_len: int = 1024
    pqa_a_url: str | None = None
    pqa_u_url: str | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    concurrency: int = 2
    device: str = "auto"
    # Optimiser and schedule (Appendix A.2/A.3: AdamW, linear warmup over 10% of steps, cosine).
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: float = 1.0
    early_stop_on: Literal["score", "generate"] = Field(
        "score", description="prediction mode whose dev metric drives early stopping"
    )
    eval_batch_size: int = Field(16, ge=1)
    pqal_fold: int = Field(0, ge=0, le=9, description="official PQA-L CV fold (BLURB: 0)")
    pqa_a_train_size: int = Field(
        200_000, ge=1, description="PQA-A items for training; the rest is its dev set"
    )
    pqa_a_epochs: int = 1
    pqa_u_epochs: int = 1
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per grid point (None: cores / concurrency)"
    )


class EvaluateConfig(_Section):
    predictions: list[Literal["generate", "score"]] = Field(
        default_factory=lambda: ["generate", "score"]
    )
    plot_mode: Literal["generate", "score"] = Field(
        "score", description="prediction mode drawn in the accuracy-vs-FLOPs plot"
    )


class TrackingConfig(_Section):
    tracking_uri: str | None = Field(None, description="MLflow URI; default SQLite under home")
    pretrain_experiment: str = "mediswift-pretrain"
    finetune_experiment: str = "mediswift-finetune"


class PipelineConfig(_Section):
    name: str = "custom"
    mirror: str | None = Field(None, description="local folder or URL standing for upstream")
    download: DownloadConfig = DownloadConfig()
    parse: ParseConfig = ParseConfig()
    filter: FilterConfig = FilterConfig()
    vocab: VocabConfig = VocabConfig()
    tokenize: TokenizeConfig = TokenizeConfig()
    pretrain: PretrainConfig = PretrainConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        for s in self.pretrain.sparsity_levels:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"sparsity level {s} must be in [0, 1)")
        return self

    def resolve(self, url: str) -> str:
        """Map a real upstream URL onto the mirror when one is set (same relative layout)."""
        if not self.mirror:
            return url
        for base, folder in UPSTREAMS.items():
            if url.startswith(base):
                return join_url(self.mirror, folder + url[len(base) :])
        return url


def join_url(base: str, rel: str) -> str:
    if "://" in base:
        return base.rstrip("/") + "/" + rel.lstrip("/")
    return str(Path(base) / rel) + ("/" if rel.endswith("/") else "")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def recipe_path(recipe: str) -> Path:
    p = Path(recipe)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    p = RECIPES_DIR / f"{recipe}.yaml"
    if not p.exists():
        known = sorted(x.stem for x in RECIPES_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"recipe {recipe!r} not found (known: {', '.join(known)})")
    return p


def load_recipe(
    recipe: str, overrides: dict[str, Any] | None = None, mirror: str | None = None
) -> PipelineConfig:
    """Load a recipe by name or path, apply overrides (nested dict), then the mirror setting.

    The mirror comes, in order of precedence, from `mirror`, `MEDISWIFT_MIRROR`, the recipe.
    """
    path = recipe_path(recipe)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of stage sections")
    data.setdefault("name", path.stem)
    data = deep_merge(data, overrides or {})
    mirror = mirror or os.environ.get("MEDISWIFT_MIRROR") or data.get("mirror")
    if mirror and "://" not in mirror:
        mirror = str(Path(mirror).expanduser().resolve())
    data["mirror"] = mirror
    try:
        return PipelineConfig.model_validate(data)
    except Exception as e:
        raise ValueError(f"{path}: {e}") from e


def home_dir(home: str | os.PathLike[str] | None = None) -> Path:
    return Path(home or os.environ.get("MEDISWIFT_HOME") or ".mediswift").expanduser().resolve()
