"""A tiny pre-training run with every checkpointed part, built as pre-training builds one
before it resumes (`mediswift.train.pretrain`), for the tests that save, resume and compare
runs bit for bit."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from mediswift.config import PretrainConfig
from mediswift.model import GPT, GPTConfig
from mediswift.sparsity import DynamicSparsity, MaskedParams, make_masks
from mediswift.train.distributed import Dist
from mediswift.train.loop import LoopConfig, TrainState, train
from mediswift.train.optim import optimizer_for
from mediswift.train.state import (
    DynamicSparsityState,
    LoaderState,
    MaskState,
    ModelState,
    OptimizerState,
    ProgressState,
    RNGState,
    Stateful,
    TrainCheckpoint,
)
from mediswift.train.synthetic import SyntheticTokens

D = Dist()


@dataclass
class TinyRun:
    model: GPT
    masked: MaskedParams
    dynamic: DynamicSparsity | None
    opt: torch.optim.Optimizer
    loader: SyntheticTokens
    state: TrainState
    checkpoint: TrainCheckpoint
    settings: PretrainConfig

    def fit(self, steps: int) -> list[float]:
        """Train `steps` more steps; the loss of every step so far."""
        cfg = replace(LoopConfig.from_settings(self.settings), steps=steps)
        train(self.model, self.opt, self.loader, cfg, D, self.state, self.masked, self.dynamic)
        return [r["train_loss"] for r in self.state.curve]


def tiny_run(sparsity: float, init_seed: int, total_steps: int, sharded: bool = False) -> TinyRun:
    """A run with dropout and, when sparse, dynamic SET masks (masks and moments move), so
    every part of the state matters; `sharded` takes the parts' FSDP path (whole tensors, then
    split: here, on whole parameters, copied)."""
    settings = PretrainConfig(steps=total_steps, lr=3e-3, log_every=1, dropout=0.1)
    torch.manual_seed(init_seed)
    model = GPT(
        GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=64, block_size=32, dropout=0.1)
    )
    masked = MaskedParams(model, make_masks(model, sparsity, seed=init_seed))
    masked.apply_to_weights()
    dynamic = (
        DynamicSparsity(masked, "set", total_steps=total_steps, update_every=2, seed=init_seed)
        if masked
        else None
    )
    opt = optimizer_for(model, settings)
    loader = SyntheticTokens(64, 16, 4, seed=0)  # its seed is configuration, not state
    state = TrainState()
    parts: dict[str, Stateful] = {
        "progress": ProgressState(state),
        "model": ModelState(model, D, sharded=sharded),
        "masks": MaskState(masked, D),
        "optimizer": OptimizerState(model, opt, D, sharded=sharded),
        "loader": LoaderState(loader, D),
        "rng": RNGState(D),
    }
    if dynamic is not None:
        parts["dynamic"] = DynamicSparsityState(dynamic, D)
    checkpoint = TrainCheckpoint(model.config, D, parts)
    return TinyRun(model, masked, dynamic, opt, loader, state, checkpoint, settings)


def same_bits(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal bit for bit: torch.equal takes -0.0 for 0.0, which masking leaves in weights."""
    flat = [t.contiguous().reshape(-1).view(torch.uint8) for t in (x, y)]
    return x.dtype == y.dtype and x.shape == y.shape and torch.equal(*flat)
