"""AdamW and the learning-rate schedule of Appendix A.1.

The hyperparameters have no defaults here: their paper values live in the pre-training settings
(`PretrainConfig`), the one place a recipe changes them.

Weight decay applies to the weight matrices only -- the six per block. Embeddings,
LayerNorm gains and biases are not decayed: decaying gains and biases pulls them to zero for no
regularisation benefit, and decaying the tied embedding also shrinks the output layer; this is
the GPT-3 / nanoGPT / Megatron convention, which the paper ("weight decay 0.1") does not contradict.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from mediswift.sections import PretrainConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed weight matrices, undecayed embeddings/LayerNorm/biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2 and "wte" not in name and "wpe" not in name
        (decay if is_matrix else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over `param_groups`; the fused kernel on CUDA.

    `foreach` on CPU keeps the update deterministic and fast; masks are applied around the step
    (see `mediswift.sparsity`), never inside it, so any AdamW implementation works.
    """
    on_cuda = next(model.parameters()).is_cuda
    use_fused = on_cuda if fused is None else fused
    return torch.optim.AdamW(
        param_groups(model, weight_decay),
        lr=lr,
        betas=betas,
        eps=eps,
        fused=use_fused or None,
        foreach=None if use_fused else True,
    )


def optimizer_for(
    model: nn.Module, cfg: PretrainConfig, fused: bool | None = None
) -> torch.optim.AdamW:
    """`make_optimizer` with the pre-training settings' AdamW hyperparameters."""
    return make_optimizer(
        model,
        lr=cfg.lr,
        betas=tuple(cfg.betas),  # type: ignore[arg-type]
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        fused=fused,
    )


def lr_at(
    step: int,
    total_steps: int,
    peak_lr: float,
    warmup_fraction: float,
    min_ratio: float,
) -> float:
    """Linear warmup over `warmup_fraction` of the steps, then cosine decay to min_ratio * peak.

    `step` counts from 0 (the first update uses lr_at(0) = peak / warmup_steps).
    """
    warmup = max(1, int(warmup_fraction * total_steps))
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    min_lr = min_ratio * peak_lr
    return min_lr + 0.5 * (peak_lr - min_lr) * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
