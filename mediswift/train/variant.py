"""One pre-training variant: what it is (`VariantSpec`, validated once, JSON for torchrun
processes), its name, and the batches it trains and validates on."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import BaseModel, ConfigDict, Field

from mediswift.artifacts import MANIFEST
from mediswift.settings import PretrainConfig
from mediswift.train.distributed import Dist

VARIANT_MANIFEST = MANIFEST  # the variant directory is a unit artifact: done once this exists


class VariantSpec(BaseModel):
    """Everything one variant needs, validated once: JSON crosses into torchrun processes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    config: PretrainConfig  # this variant's size (one model name)
    sparsity: float
    vocab_size: int
    out_dir: str
    train_shards: list[str] = Field(default_factory=list)
    val_shards: list[str] = Field(default_factory=list)
    data: str = "shards"  # "shards" (token Parquet) or "synthetic" (benchmarks, trainer tests)

    @property
    def cfg(self) -> PretrainConfig:
        return self.config

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str) -> VariantSpec:
        return cls.model_validate_json(text)


def make_train_loader(spec: VariantSpec, d: Dist) -> Iterator[torch.Tensor]:
    """This rank's endless, shuffled, resumable loader of (micro_batch, seq_len + 1) rows."""
    cfg = spec.cfg
    if spec.data == "synthetic":
        from mediswift.train.synthetic import SyntheticTokens

        return SyntheticTokens(
            spec.vocab_size, cfg.seq_len, cfg.micro_batch, d.rank, d.world_size, cfg.seed
        )
    if not spec.train_shards:
        raise ValueError(f"variant {spec.name}: no train token shards given")
    from mediswift.train.batches import TokenBatches  # owned by the tokenize stage

    return TokenBatches(
        spec.train_shards,
        cfg.seq_len,
        cfg.micro_batch,
        rank=d.rank,
        world_size=d.world_size,
        seed=cfg.seed,
        shuffle=True,
    )


def make_val_batches(spec: VariantSpec, d: Dist) -> list[torch.Tensor]:
    """This rank's share of the fixed validation batches (the same ones at every evaluation).

    The batches are one global list -- the first `eval_batches` batches of `micro_batch` rows in
    stream order -- dealt round-robin to the ranks, so the validation loss does not depend on the
    number of processes.
    """
    cfg = spec.cfg
    if spec.data == "synthetic":  # rows of a disjoint seed, so never training rows
        from mediswift.train.synthetic import SyntheticTokens

        rows = SyntheticTokens(
            spec.vocab_size, cfg.seq_len, cfg.micro_batch, seed=cfg.seed + 10_000
        )
        batches = [next(rows) for _ in range(cfg.eval_batches)]
    else:
        if not spec.val_shards:
            raise ValueError(f"variant {spec.name}: no validation token shards given")
        from mediswift.train.batches import fixed_batches

        batches = fixed_batches(spec.val_shards, cfg.seq_len, cfg.micro_batch, cfg.eval_batches)
    return batches[d.rank :: d.world_size]
