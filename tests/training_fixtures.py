"""Shared pieces of the training tests: a tiny pre-training run and a free loopback port."""

from __future__ import annotations

import socket
from pathlib import Path

from mediswift.config import PretrainConfig
from mediswift.train.pretrain import VariantSpec

VOCAB = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_pretrain_config(**overrides) -> PretrainConfig:
    """The tiny model on 16-token rows: 6 steps, evaluated and checkpointed every 3, on CPU."""
    base = dict(
        model="tiny",
        seq_len=16,
        block_size=32,
        global_batch=8,
        micro_batch=4,
        steps=6,
        lr=3e-3,
        log_every=1,
        eval_every=3,
        eval_batches=2,
        checkpoint_every=3,
        measure_peak=False,
        device="cpu",
    )
    return PretrainConfig(**(base | overrides))


def tiny_variant(out: Path, cfg: PretrainConfig, name: str = "tiny-s50", **kw) -> VariantSpec:
    """A 50% sparse variant of `cfg` writing to `out`, on synthetic tokens unless `kw` says."""
    return VariantSpec(
        name=name,
        config=cfg.model_dump(mode="json"),
        sparsity=0.5,
        vocab_size=VOCAB,
        out_dir=str(out),
        **({"data": "synthetic"} | kw),
    )
