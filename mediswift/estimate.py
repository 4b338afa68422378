"""What a recipe will cost before it runs: accelerator hours, disk and download volume.

Accelerator time is training FLOPs / (peak x MFU). GPUs do not skip the zeros of unstructured
sparsity (the paper's CS-2 does), so a sparse variant is priced at its dense FLOPs on a GPU;
the FLOPs saving is printed beside it. Disk counts what the pipeline keeps: raw files, document
and token shards, and checkpoints (the periodic ones kept, with AdamW moments, plus the final
weights; a sparse variant's masked matrices as kept values + bits, `mediswift.checkpoint_size`).
Sizes of upstream files are assumptions, stated in the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mediswift.baselines import planned_variants
from mediswift.checkpoint_size import ParamCounts, checkpoint_bytes, dense_bytes, gpt_params
from mediswift.config import PipelineConfig
from mediswift.flops import flops_for
from mediswift.model.sizes import size as model_size

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' data sheets.
GPU_PEAKS: dict[str, float] = {"a100": 312e12, "h100": 989e12}
# Upstream sizes assumed when a recipe takes "all" (PubMed 2026 baseline: 1,334 files).
PUBMED_BASELINE_FILES = 1334
PUBMED_FILE_BYTES = 30e6  # a gzipped baseline file, about 30,000 citations
PMC_ARTICLES = 5.0e6
PMC_ARTICLE_BYTES = 120e3  # JATS XML + metadata JSON of one article
TEXT_BYTES_PER_TOKEN = 4.5  # UTF-8 text per BPE token in document shards (Parquet, compressed)


@dataclass(frozen=True)
class Estimate:
    gpu: str
    mfu: float
    gpu_hours: dict[str, float]  # variant -> hours on one GPU
    download_bytes: float
    disk_bytes: dict[str, float]  # what -> bytes
    dense_checkpoint_bytes: float = 0.0  # the same checkpoints in format 1 (all dense)


def _params(size: str, vocab: int, block: int) -> ParamCounts:
    s = model_size(size)
    return gpt_params(s.n_layer, s.d_model, vocab, block)


def variant_checkpoint_bytes(
    params: ParamCounts,
    sparsity: float,
    keep: int,
    size_of: Callable[..., float] = checkpoint_bytes,
) -> float:
    """A variant's checkpoints on disk: `keep` periodic ones (with moments) and the final one."""
    return keep * size_of(params, sparsity, True) + size_of(params, sparsity, False)


def estimate(cfg: PipelineConfig, gpu: str = "h100", mfu: float = 0.4) -> Estimate:
    if gpu not in GPU_PEAKS:
        raise ValueError(f"unknown GPU {gpu!r}; presets: {', '.join(GPU_PEAKS)}")
    if not 0 < mfu <= 1:
        raise ValueError(f"MFU {mfu} must be in (0, 1]")
    pt, v = cfg.pretrain, cfg.vocab.vocab_size
    hours = {}
    planned = planned_variants(pt, v)
    for p in planned:  # sparse variants at dense speed; iso-FLOPs baselines run fewer steps
        tokens = p.steps * pt.global_batch * pt.seq_len
        hours[p.name] = (
            flops_for(p.model, 0.0, tokens, v, pt.seq_len) / (GPU_PEAKS[gpu] * mfu) / 3600
        )
    d = cfg.download
    pubmed = (d.pubmed_max_files or PUBMED_BASELINE_FILES) * PUBMED_FILE_BYTES
    pmc = min(d.pmc_max_articles or PMC_ARTICLES, PMC_ARTICLES) * PMC_ARTICLE_BYTES
    download = pubmed + pmc
    variants = len(hours)
    ckpt = dense_ckpt = 0.0
    for p in planned:
        params, keep = _params(p.model, v, pt.block_size), pt.keep_checkpoints
        ckpt += variant_checkpoint_bytes(params, p.sparsity, keep)
        dense_ckpt += variant_checkpoint_bytes(params, p.sparsity, keep, dense_bytes)
    # The corpus is read once per epoch of the token budget; its size follows from the raw text.
    corpus_tokens = download / 2.5 / TEXT_BYTES_PER_TOKEN  # gzip/XML overhead ~2.5x the text
    disk = {
        "raw downloads": download,
        "document shards (parse + filter)": 2 * corpus_tokens * TEXT_BYTES_PER_TOKEN,
        "token shards": corpus_tokens * (2 if v < 65536 else 4),
        f"checkpoints ({variants} variants)": ckpt,
    }
    return Estimate(gpu, mfu, hours, download, disk, dense_ckpt)


def describe(e: Estimate) -> list[str]:
    gb = 1e9
    lines = [f"estimates ({e.gpu.upper()} bf16 peak {GPU_PEAKS[e.gpu] / 1e12:.0f} TFLOP/s at "
             f"{e.mfu:.0%} MFU; sparse variants at dense speed: GPUs do not skip zeros):"]  # fmt: skip
    for name, h in e.gpu_hours.items():
        lines.append(f"  {name}: {_hours(h)} GPU-hours")
    lines.append(f"  all variants: {_hours(sum(e.gpu_hours.values()))} GPU-hours")
    lines.append(
        f"  download: {e.download_bytes / gb:,.1f} GB (assumed {PUBMED_FILE_BYTES / 1e6:.0f} MB "
        f"per PubMed file, {PMC_ARTICLE_BYTES / 1e3:.0f} KB per PMC article)"
    )
    for what, b in e.disk_bytes.items():
        lines.append(f"  disk, {what}: {b / gb:,.1f} GB")
    if e.dense_checkpoint_bytes:
        lines.append(
            f"    (sparse matrices as kept values + bits; {e.dense_checkpoint_bytes / gb:,.1f} GB "
            "with every tensor stored dense)"
        )
    lines.append(f"  disk in all: {sum(e.disk_bytes.values()) / gb:,.1f} GB")
    return lines


def _hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.3g}"
