"""One pre-training variant: what it is (`VariantSpec`, a unit spec keyed by what it trains
on and with, validated once, JSON for torchrun processes), its name, and the batches it trains
and validates on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

import torch
from pydantic import Field

from mediswift.artifacts import MANIFEST
from mediswift.sections import PretrainConfig
from mediswift.train.distributed import Dist
from mediswift.units import UnitSpec, unkeyed

VARIANT_MANIFEST = MANIFEST  # the variant directory is a unit artifact: done once this exists


class VariantSpec(UnitSpec):
    """One variant, the pretrain stage's unit: the tokens it trains on (the tokenize output's
    key), the settings that change its result and its one sparsity level. Everything else it
    needs rides along unkeyed (where the tokens and the unit are, what it is called): JSON
    crosses into torchrun processes."""

    stage: ClassVar[str] = "pretrain"
    kind: ClassVar[str] = "variant"
    # 4: keyed by this spec (it was `mediswift.graph.variant_unit`'s hand-made key).
    # Earlier: 3, the device is a schedule setting (as in fine-tuning); checkpoint format 2
    # (sparse matrices as kept values + bits) did not bump it: the trained weights are the same
    # bits and format 1 checkpoints still load, resume and export.
    version: ClassVar[int] = 4

    tokens: str = Field("", description="content key of the token shards it trains on")
    config: PretrainConfig  # its size (one model name); its result settings are keyed
    sparsity: float  # the one level this variant trains at
    name: str = unkeyed("", "the variant's name (e.g. tiny-s75, mini-s75-seed1)")
    vocab_size: int = unkeyed(0, "the tokenizer's (decided by the tokens)")
    out_dir: str = unkeyed("", "the unit's directory (absolute)")
    train_shards: list[str] = unkeyed(description="token shards (decided by the tokens)",
                                      default_factory=list)  # fmt: skip
    val_shards: list[str] = unkeyed(description="validation token shards",
                                    default_factory=list)  # fmt: skip
    # "shards" (token Parquet) or "synthetic" (benchmarks, trainer tests)
    data: str = unkeyed("shards", "where its batches come from")

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
