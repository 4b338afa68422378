"""The recipe's sections, one per stage and concern: every setting with its role (`result` or
`schedule`, from `mediswift.settings`), its default, bounds and unit, and the rules across a
section's own fields. `mediswift.config.PipelineConfig` puts them together into a recipe.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, create_model, model_validator

from mediswift.settings import Section, result, schedule

# Bounds past which a setting cannot work: 50x the paper's 200k steps (beyond it the schedule's
# warmup alone outlasts any budget), and a context whose position table fits in memory.
MAX_STEPS = 10_000_000
MAX_CONTEXT = 65_536
# The level of 2:4 sparsity (mediswift.sparsity.semi24.SPARSITY; settings do not import torch).
SEMI24_LEVEL = 0.5
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:\d+)?)$"
Beta = Annotated[float, Field(ge=0.0, lt=1.0)]


class Grid(Section):
    """The grid of one fine-tuning task (Appendices A.2-A.3): every batch size x rate x seed."""

    batch_sizes: list[int] = schedule(
        ..., description="examples per optimizer step", plan=True, min_length=1
    )
    learning_rates: list[float] = schedule(
        ..., description="peak learning rates", plan=True, min_length=1
    )

    @model_validator(mode="after")
    def _bounds(self) -> Grid:
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        if any(not 0 < lr < 1 for lr in self.learning_rates):
            raise ValueError(f"learning rates must be in (0, 1), got {self.learning_rates}")
        return self


def optimization(name: str, **defaults: Any) -> type[Section]:
    """A base section with the AdamW + warmup/cosine settings, one definition for both uses.

    Pre-training and fine-tuning mean the same thing by these names (Appendix A); only their
    paper defaults differ, so each section passes its own defaults here.
    """
    fields: dict[str, Any] = {
        "weight_decay": (
            float,
            result(defaults["weight_decay"], "AdamW decoupled weight decay", ge=0.0, le=1.0),
        ),
        "betas": (
            tuple[Beta, Beta],
            result(defaults["betas"], "AdamW (beta1, beta2), each in [0, 1)"),
        ),
        "eps": (float, result(1e-8, "AdamW epsilon", gt=0.0, le=1e-2)),
        "warmup_fraction": (
            float,
            result(0.1, "fraction of the steps with a linear warmup", ge=0.0, le=1.0),
        ),
        "min_lr_ratio": (
            float,
            result(
                defaults["min_lr_ratio"], "cosine floor, as a fraction of the peak", ge=0.0, le=1.0
            ),
        ),
        "grad_clip": (
            float,
            result(1.0, "global gradient-norm clip (0: none)", ge=0.0),
        ),
    }
    return create_model(name, __base__=Section, **fields)  # type: ignore[call-overload]


# Real upstream bases of the pre-training corpus and the mirror folder standing for each (same
# relative layout). Downstream tasks declare their own bases (see `mediswift.finetune.task`).
CORPUS_UPSTREAMS: dict[str, str] = {
    "https://ftp.ncbi.nlm.nih.gov/pubmed/": "pubmed/",
    "https://pmc-oa-opendata.s3.amazonaws.com/": "pmc/",
}


class Connection(Section):
    """How to reach the upstream servers (timeouts, retries, User-Agent): never what is fetched,
    so every field only schedules work."""

    max_connections: int = schedule(
        3, "parallel connections per NCBI host (its FTP asks for few)", ge=1, le=64
    )
    contact_email: str = schedule(
        "mediswift-users@example.org", "sent in the User-Agent, as NCBI asks"
    )
    timeout_s: float = schedule(60.0, "seconds without data before a request fails", gt=0)
    max_retries: int = schedule(6, "in-process retries of a transient fault", ge=0, le=100)
    backoff_s: float = schedule(1.0, "first retry waits up to this many seconds (doubling)", ge=0)
    backoff_max_s: float = schedule(60.0, "longest wait between retries, seconds", ge=0)
    max_download_bytes: int = schedule(
        8 * 1024**3, "bytes one downloaded file may have; a longer body is cut and refused", ge=1
    )


class DownloadConfig(Connection):
    pubmed_url: str = result(
        "https://ftp.ncbi.nlm.nih.gov/pubmed/", "PubMed base (baseline/ and updatefiles/ below)"
    )
    pubmed_max_files: int | None = result(None, "baseline files to take (None: all)", ge=0)
    pubmed_include_updates: bool = result(True, "apply the daily update files too")
    pubmed_max_update_files: int | None = result(None, "update files to take (None: all)", ge=0)
    track_upstream: bool = schedule(
        False,
        "list PubMed upstream at every run and key the download on that listing, so new "
        "daily update files re-run download and what follows (the scheduled updates use it)",
        plan=True,
    )
    pmc_url: str = result(
        "https://pmc-oa-opendata.s3.amazonaws.com/", "PMC Cloud Service bucket (per-article)"
    )
    pmc_max_articles: int | None = result(None, "PMC articles to take (None: all)", ge=0)
    pmc_commercial_only: bool = result(False, "keep only licences allowing commercial use")
    extra_corpora: list[str] = result(
        default_factory=list,
        description="JSONL files (id, text, optional title): URLs, or paths; a relative path "
        "is looked up in the mirror first",
    )
    pmc_metadata_connections: int = schedule(
        32, "parallel requests for PMC metadata to the Cloud Service bucket (S3)", ge=1, le=512
    )
    pmc_batch_size: int = schedule(50, "PMC articles per download task", ge=1)

    def connection(self) -> Connection:
        """Its connection settings alone: what a download unit needs to reach upstream."""
        return Connection.model_validate({k: getattr(self, k) for k in Connection.model_fields})


class ParseConfig(Section):
    on_error: Literal["fail", "quarantine"] = schedule(
        "fail", "a bad input file fails its task, or is listed and skipped", plan=True
    )
    max_quarantined: int = schedule(
        0,
        "quarantined files a run accepts; above it the stage fails and the next run fetches "
        "and parses exactly those files again",
        plan=True,
        ge=0,
    )
    rows_per_shard: int = result(
        50_000, "documents per shard: a file with more is cut into several shards", ge=1
    )
    pmc_articles_per_shard: int = result(1_000, "PMC articles per shard and per parse task", ge=1)
    max_xml_bytes: int = schedule(
        2 * 1024**3, "decompressed bytes one XML file may have; more is refused", ge=1024
    )
    max_xml_node_bytes: int = schedule(
        64 * 1024**2,
        "bytes one text, comment, attribute, CDATA or PI node may have (bounds peak memory)",
        ge=1024,
    )
    max_xml_nodes: int = schedule(
        100_000_000,
        "elements, attributes, comments, PIs and entity references one XML file may have "
        "(real files: one per 30-45 bytes); more is refused",
        ge=1,
    )
    max_xml_record_nodes: int = schedule(
        500_000,
        "elements, attributes, comments, PIs and entity references one XML record (or what "
        "lies between two records) may hold: each costs up to ~350 bytes of memory; more is "
        "refused",
        ge=1,
    )
    max_record_bytes: int = schedule(
        64 * 1024**2,
        "bytes one document's source may span: a PubMed or PMC record (decompressed XML) or "
        "one line of an extra corpus (bounds what any stage holds of one document); more is "
        "refused",
        ge=1024,
    )


class FilterConfig(Section):
    min_abstract_chars: int = result(1, "shortest abstract kept, in characters", ge=0)
    languages: list[str] | None = result(
        None, "keep only these PubMed languages (e.g. ['eng']; None: all)"
    )
    validation_fraction: float = result(
        0.03, "fraction of documents in the validation split", ge=0.0, lt=1.0
    )
    split_salt: str = result("mediswift", "salt of the doc_id hash that assigns the split")
    max_year: int | None = result(
        None,
        "corpus cut-off: drop documents published after this year (publication year; "
        "documents without one are kept; None: no cut-off)",
        ge=1000,
        le=9999,
    )
    max_revised: str | None = result(
        None,
        "snapshot cut-off: keep PubMed records as last revised (DateRevised) before this date, "
        "YYYY-MM-DD, as if PubMed were read that day (the paper's 'updated prior to 2023' is "
        "2023-01-01); PMC articles published on or after it are dropped too; None: no snapshot",
        pattern=r"^\d{4}-\d{2}-\d{2}$",
    )
    pmc_overlap: bool = result(
        False, "drop PubMed abstracts whose article's full text is in the PMC set (yes/no)"
    )
    pmc_overlap_rule: Literal["full_text_kept", "any_pmcid"] = result(
        "full_text_kept",
        "with pmc_overlap: drop abstracts whose full text is among the kept PMC documents, or "
        "every abstract whose record names a PMC article (any_pmcid: The Pile's script)",
    )
    decontaminate: bool = result(
        False,
        "drop documents (or windows: decontaminate_mode) sharing an n-gram with a dev or test "
        "example of the recipe's downstream tasks (yes/no); this project's addition, not the "
        "paper's",
    )
    contamination_ngram: int = result(
        13,
        "n-gram length of the decontamination check, in words: GPT-3's (lower-cased, "
        "punctuation deleted, split on white space)",
        ge=1,
    )
    decontaminate_mode: Literal["document", "window"] = result(
        "document",
        "what decontamination removes: the whole document, or (window: GPT-3's) the shared "
        "n-gram and 200 characters either side, pieces under 200 characters discarded, a "
        "document split into more than 10 pieces dropped",
    )
    contamination_max_docs: int | None = result(
        10,
        "boilerplate guard: n-grams found in more than this many corpus documents are ignored "
        "by decontamination (GPT-3: 10; None: none ignored)",
        ge=1,
    )


class VocabConfig(Section):
    vocab_size: int = result(42_384, "BPE entries, specials included", ge=16, le=2**31 - 1)
    sample_sentences: int = result(
        2_000_000, "Moses-tokenized train lines sampled for BPE (0: all)", ge=0
    )
    seed: int = result(0, "seed of the line sample")
    character_coverage: float = result(
        0.9999, "fraction of characters the BPE alphabet covers", gt=0.0, le=1.0
    )
    workers: int = schedule(
        2, "processes for the Moses pass (the vocabulary does not depend on it)", ge=1
    )


class TokenizeConfig(Section):
    workers: int = schedule(
        2, "worker processes (ProcessPoolTaskRunner); 1: the run's own process", ge=1
    )
    dask_address: str | None = schedule(
        None, "Dask scheduler (tcp://host:8786): run the shard tasks on that cluster"
    )


_PretrainOptim = optimization(
    "PretrainOptimization", weight_decay=0.1, betas=(0.9, 0.95), min_lr_ratio=0.1
)


class Arm(Section):
    """One arm of a designed comparison: a model size at one sparsity level, with its seeds."""

    model: str = result(..., "size name (as in pretrain.model)")
    sparsity: float = result(..., "fraction of zero weights, in [0, 1)", ge=0.0, lt=1.0)
    seeds: list[int] | None = schedule(
        None, "this arm's pre-training seeds (None: pretrain.seeds)", plan=True, min_length=1
    )
    lr: float | None = result(
        None, "this arm's peak learning rate (None: pretrain.lr), e.g. from a pilot", gt=0.0, lt=1.0
    )


class PretrainConfig(_PretrainOptim):  # type: ignore[misc,valid-type]
    model: str | list[str] = result(
        "tiny",
        "size name: tiny, mini, small, med, large, xl (Table 5); a list trains every size at every "
        "sparsity level (the paper's whole experiment)",
    )
    sparsity_levels: list[float] = schedule(
        default_factory=lambda: [0.0, 0.5, 0.75],
        description="one variant per level: the fraction of zero weights, in [0, 1)",
        plan=True,
        min_length=1,
    )
    arms: list[Arm] | None = schedule(
        None,
        "the (size, sparsity) pairs to train instead of every size at every level: a designed "
        "comparison, e.g. sizes of equal active non-embedding parameters (repro-claims). When "
        "set, pretrain.model and pretrain.sparsity_levels are not used",
        plan=True,
    )
    seeds: list[int] | None = schedule(
        None,
        "pre-training seeds: every variant is trained once per seed, named <variant>-seed<n> "
        "(None: pretrain.seed only, names without a seed). The claims decide a loss difference "
        "against the seeds' spread",
        plan=True,
        min_length=1,
    )
    iso_flops_baselines: bool = schedule(
        False,
        "for each sparse level, also train a dense model of the same size for as many steps as "
        "make the sparse variant's training FLOPs, with its own full schedule (warmup fraction, "
        "cosine to min_lr_ratio): the fair dense baseline at equal FLOPs",
        plan=True,
    )
    sparsity_method: Literal["static", "set", "rigl", "semi24"] = result(
        "static",
        "static random masks (the paper), dynamic SET / RigL, or semi24: static 2:4 masks (2 of "
        "every 4 weights along the input dimension, the pattern GPU sparse tensor cores run; "
        "50% only)",
    )
    semi24_kernels: bool = schedule(
        False,
        "semi24 on CUDA: forward products on PyTorch's 2:4 sparse kernels (off by default: on an "
        "H200 they made MediSwift-Med's training step 3.7x slower; see the README). Like the "
        "device, it changes rounding only",
    )
    sparsity_update_every: int = result(100, "dynamic sparsity: steps between mask updates", ge=1)
    sparsity_drop_fraction: float = result(
        0.3, "dynamic sparsity: fraction of active weights dropped per update", gt=0.0, lt=1.0
    )
    sparsity_stop_fraction: float = result(
        0.75, "dynamic sparsity: fraction of steps with mask updates", gt=0.0, le=1.0
    )
    seq_len: int = result(1024, "tokens per training sequence (MSL)", ge=2, le=MAX_CONTEXT)
    block_size: int = result(
        1024, "learned positions (context window), >= seq_len", ge=2, le=MAX_CONTEXT
    )
    global_batch: int = result(512, "sequences per optimizer step", ge=1)
    micro_batch: int = result(8, "sequences per forward pass and process", ge=1)
    steps: int = result(200_000, "optimizer steps", ge=1, le=MAX_STEPS)
    lr: float = result(2e-4, "peak learning rate", gt=0.0, lt=1.0)
    dropout: float = result(0.0, "dropout probability", ge=0.0, lt=1.0)
    eval_every: int = result(1000, "steps between validation losses", ge=1)
    eval_batches: int = result(20, "micro-batches per validation loss", ge=1)
    checkpoint_every: int = result(1000, "steps between checkpoints", ge=1)
    log_every: int = result(10, "steps between logged training losses", ge=1)
    seed: int = result(0, "seed of the weights, masks and data order")
    compile: bool = result(False, "torch.compile the model (numerics may differ slightly)")
    fsdp: bool = result(False, "shard the model with FSDP2 (static sparsity only)")
    device: str = schedule(
        "auto", "auto, cpu, cuda or cuda:N (bf16 autocast on CUDA)", pattern=DEVICE_PATTERN
    )
    nproc: int = schedule(1, "processes per node under torchrun (DDP)", ge=1, le=1024)
    nnodes: int = schedule(1, "nodes of a multi-node run (torchrun, c10d rendezvous)", ge=1)
    rdzv_endpoint: str | None = schedule(
        None, "host:port of the c10d rendezvous, reachable from every node (several nodes)"
    )
    rdzv_id: str | None = schedule(
        None, "rendezvous id shared by the nodes of one run (default: the variant's key)"
    )
    keep_checkpoints: int = schedule(2, "periodic checkpoints kept per variant", ge=1)
    measure_peak: bool = schedule(True, "time a matmul to report achieved/peak FLOP/s")
    torch_threads: int = schedule(0, "CPU threads per process (0: torch default)", ge=0)

    @model_validator(mode="after")
    def _rules(self) -> PretrainConfig:
        if isinstance(self.model, list) and (
            not self.model or len(set(self.model)) != len(self.model)
        ):
            raise ValueError(f"pretrain.model: a list of distinct sizes, got {self.model}")
        if self.arms is not None:
            pairs = [(a.model, a.sparsity) for a in self.arms]
            if not pairs or len(set(pairs)) != len(pairs):
                raise ValueError(f"pretrain.arms: distinct (model, sparsity) pairs, got {pairs}")
        for seeds in [self.seeds, *(a.seeds for a in self.arms or [])]:
            if seeds is not None and len(set(seeds)) != len(seeds):
                raise ValueError(f"pretrain.seeds: distinct seeds, got {seeds}")
        for s in self.sparsity_levels:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"pretrain.sparsity_levels: {s} is not in [0, 1)")
        if self.seq_len > self.block_size:
            raise ValueError(
                f"pretrain.seq_len {self.seq_len} exceeds the context pretrain.block_size "
                f"{self.block_size}"
            )
        self.grad_accum(self.nproc * self.nnodes)
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("pretrain.nnodes > 1 needs pretrain.rdzv_endpoint (host:port)")
        levels = [lv for size in self.sizes for lv in self.levels(size)]
        if self.sparsity_method == "semi24" and set(levels) - {0.0, SEMI24_LEVEL}:
            raise ValueError(
                f"pretrain.sparsity_levels {levels}: semi24 keeps 2 of every 4 "
                "weights, so its only level is 0.5 (and 0 for the dense baseline)"
            )
        dynamic = self.sparsity_method in ("set", "rigl")
        if self.fsdp and dynamic and any(levels):
            raise ValueError("pretrain: dynamic sparsity (set/rigl) needs whole matrices, not fsdp")
        return self

    def grad_accum(self, world_size: int) -> int:
        """Micro-batches per optimizer step when `world_size` processes train (the one place
        the rule is written: the recipe checks its own launch, the trainer the one it got)."""
        per_step = self.micro_batch * world_size
        if self.global_batch % per_step:
            raise ValueError(
                f"pretrain.global_batch {self.global_batch} is not a multiple of micro_batch "
                f"{self.micro_batch} x {world_size} processes"
            )
        return self.global_batch // per_step

    @property
    def tokens(self) -> int:
        """Training tokens per variant."""
        return self.steps * self.global_batch * self.seq_len

    @property
    def sizes(self) -> list[str]:
        """The model sizes this recipe trains (one, the list given, or those of the arms)."""
        if self.arms is not None:
            return list(dict.fromkeys(a.model for a in self.arms))
        return [self.model] if isinstance(self.model, str) else list(self.model)

    def levels(self, size: str) -> list[float]:
        """The sparsity levels trained at `size`: the recipe's levels, or its arms' at it."""
        if self.arms is not None:
            return [a.sparsity for a in self.arms if a.model == size]
        return list(self.sparsity_levels)

    def lr_of(self, size: str, sparsity: float) -> float:
        """The peak learning rate of one arm: its own, else the recipe's."""
        for a in self.arms or []:
            if (a.model, a.sparsity) == (size, sparsity) and a.lr is not None:
                return a.lr
        return self.lr

    def seeds_of(self, size: str, sparsity: float) -> list[int] | None:
        """The explicit seeds of one arm (None: the single `seed`, named without it)."""
        for a in self.arms or []:
            if (a.model, a.sparsity) == (size, sparsity) and a.seeds is not None:
                return list(a.seeds)
        return list(self.seeds) if self.seeds is not None else None

    def for_size(self, size: str) -> PretrainConfig:
        """These settings for one size: what a single variant is trained with."""
        return self.model_copy(update={"model": size})


class EvaluateConfig(Section):
    predictions: list[Literal["generate", "score"]] = result(
        default_factory=lambda: ["generate", "score"],
        description="prediction modes reported (greedy generation, constrained scoring)",
        min_length=1,
    )
    plot_mode: Literal["generate", "score"] = result(
        "score", "prediction mode drawn in the accuracy-vs-FLOPs plot"
    )


class ExecutorConfig(Section):
    kind: Literal["local", "dask"] = schedule(
        "local", "where the data stages' unit tasks run: this machine, or a Dask cluster"
    )
    address: str | None = schedule(
        None, "Dask scheduler (tcp://host:8786) when kind is dask; workers share the home"
    )

    @model_validator(mode="after")
    def _rules(self) -> ExecutorConfig:
        if self.kind == "dask" and not self.address:
            raise ValueError("executor.address: a Dask scheduler (tcp://host:8786) is needed")
        return self


class TrackingConfig(Section):
    tracking_uri: str | None = schedule(None, "MLflow URI; default SQLite under the home")
    pretrain_experiment: str = schedule("mediswift-pretrain", "MLflow experiment of pre-training")
    finetune_experiment: str = schedule("mediswift-finetune", "MLflow experiment of fine-tuning")
    log_models: bool = schedule(
        True,
        "log and register each variant and each selected point as an MLflow model "
        "(transformers flavour; needs the hf extra)",
    )


class TaskSettings(Section):
    """The settings every downstream task has; a task's section may add its own fields.

    Defaults differ by task: a task module builds its settings class with `task_settings`.
    """

    url: str = result(..., description="base URL of the task's raw files (mirrored when set)")
    grid: Grid = schedule(..., description="batch sizes x learning rates searched", plan=True)
    epochs: int = result(..., description="training epochs (early stopping may end sooner)", ge=1)
    prompt_tokens: int = result(..., description="soft-prompt length, virtual tokens", ge=0)
    max_train_examples: int | None = result(
        None, "train examples kept: a seeded random subset (None: all)", ge=1
    )
    max_eval_examples: int | None = result(
        None, "dev and test examples kept: a seeded random subset (None: all)", ge=1
    )


def task_settings(
    name: str,
    *,
    url: str,
    grid: Grid,
    epochs: int,
    prompt_tokens: int,
    base: type[TaskSettings] = TaskSettings,
) -> type[TaskSettings]:
    """`base` with this task's defaults (the fields and their rules stay those of `base`)."""

    def redefault(field: str, default: Any) -> tuple[Any, Any]:
        info = base.model_fields[field]
        copy = Field(
            default,
            description=info.description,
            json_schema_extra=info.json_schema_extra,
        )
        copy.metadata = list(info.metadata)  # bounds (ge, le) carry over
        return (info.annotation, copy)

    fields = {
        "url": redefault("url", url),
        "grid": redefault("grid", grid),
        "epochs": redefault("epochs", epochs),
        "prompt_tokens": redefault("prompt_tokens", prompt_tokens),
    }
    return create_model(name, __base__=base, **fields)  # type: ignore[call-overload]
