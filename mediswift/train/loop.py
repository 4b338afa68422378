"""The training loop: thin on purpose. Everything it uses (model, optimizer, schedule, masks,
loader, checkpointing, logging) is built elsewhere and passed in.

One optimizer step = `grad_accum` micro-batches (DDP syncs gradients only on the last), then:
dynamic mask update (if any, on the dense gradient) -> mask gradients -> clip -> AdamW step ->
re-mask weights and moments. The step's train loss is the mean over micro-batches and ranks.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from mediswift import interrupt
from mediswift.sparsity import DynamicSparsity, MaskedParams
from mediswift.train import finite
from mediswift.train.distributed import Dist, mean_across, min_across
from mediswift.train.optim import lr_at, set_lr

if TYPE_CHECKING:
    from mediswift.sections import PretrainConfig


@dataclass
class LoopConfig:
    """The loop's settings. Those a recipe sets have no defaults here: their values live in the
    pre-training settings (`PretrainConfig`, see `from_settings`) alone."""

    steps: int
    grad_clip: float
    peak_lr: float
    warmup_fraction: float
    min_lr_ratio: float
    log_every: int
    eval_every: int
    checkpoint_every: int
    grad_accum: int = 1  # micro-batches per optimizer step (from the batch sizes and processes)
    amp_dtype: torch.dtype | None = None  # torch.bfloat16 on GPU
    name: str = ""  # the variant, named when its loss diverges

    @classmethod
    def from_settings(
        cls,
        cfg: PretrainConfig,
        grad_accum: int = 1,
        amp_dtype: torch.dtype | None = None,
        name: str = "",
    ) -> LoopConfig:
        return cls(
            steps=cfg.steps,
            grad_clip=cfg.grad_clip,
            peak_lr=cfg.lr,
            warmup_fraction=cfg.warmup_fraction,
            min_lr_ratio=cfg.min_lr_ratio,
            log_every=cfg.log_every,
            eval_every=cfg.eval_every,
            checkpoint_every=cfg.checkpoint_every,
            grad_accum=grad_accum,
            amp_dtype=amp_dtype,
            name=name,
        )


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    tokens: int = 0  # training tokens seen, all ranks
    # Rows of step, train_loss, val_loss (None between evaluations), lr.
    curve: list[dict[str, float | None]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "tokens": self.tokens, "curve": self.curve}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainState:
        return cls(int(data["step"]), int(data["tokens"]), list(data["curve"]))


@dataclass
class Hooks:
    """What the loop calls out to; every hook runs on every rank (checkpointing may gather)."""

    evaluate: Callable[[], float] | None = None  # mean validation loss
    checkpoint: Callable[[TrainState], None] | None = None
    log: Callable[[int, dict[str, float]], None] | None = None  # step, metrics (rank 0 only)


class Divergence:
    """The first step whose training loss or gradient norm was NaN or Inf, on each rank.

    Kept on the device: reading it every step would make the host wait for the GPU every step.
    `check` reads it (one all-reduce) where the loop syncs anyway, and before every checkpoint,
    so a checkpoint never holds the weights of a diverged step.
    """

    WHAT = ("training loss", "gradient norm")

    def __init__(self, device: torch.device):
        self.first = torch.full((2,), math.inf, device=device)

    def note(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None) -> None:
        if grad_norm is None:
            grad_norm = torch.zeros((), device=loss.device)
        elif hasattr(grad_norm, "full_tensor"):  # an FSDP2 DTensor: a collective, every rank
            grad_norm = grad_norm.full_tensor()
        bad = ~torch.isfinite(torch.stack([loss.float(), grad_norm.float()]))
        self.first = torch.where(bad, self.first.clamp(max=float(step)), self.first)

    def check(self, d: Dist, where: str) -> None:
        """Every rank calls this; all raise `NonFiniteLoss` if any rank saw a bad step."""
        first = min_across(self.first, d).tolist()
        for what, step in zip(self.WHAT, first, strict=True):
            if math.isfinite(step):
                raise finite.diverged(what, int(step), where)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[torch.Tensor],
    cfg: LoopConfig,
    d: Dist,
    state: TrainState | None = None,
    masked: MaskedParams | None = None,
    dynamic: DynamicSparsity | None = None,
    hooks: Hooks | None = None,
    flops_per_step: float = 0.0,
    peak_flops: float | None = None,
) -> TrainState:
    """Train from `state.step` to `cfg.steps`; returns the final state."""
    state = state or TrainState()
    hooks = hooks or Hooks()
    masked = masked if masked else None
    params = [p for p in model.parameters() if p.requires_grad]
    no_sync = getattr(model, "no_sync", None)
    t0, tokens0 = time.perf_counter(), state.tokens
    divergence = Divergence(d.device)
    force_nan = finite.forced_nan_step()
    while state.step < cfg.steps:
        lr = lr_at(state.step, cfg.steps, cfg.peak_lr, cfg.warmup_fraction, cfg.min_lr_ratio)
        set_lr(optimizer, lr)
        loss_sum = torch.zeros((), device=d.device)
        for micro in range(cfg.grad_accum):
            batch = next(batches).to(d.device, non_blocking=True)  # (B, T+1)
            x, y = batch[:, :-1], batch[:, 1:]  # inputs, next-token targets: (B, T) each
            last = micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if last or no_sync is None else no_sync()
            with sync:
                with autocast(d.device, cfg.amp_dtype):
                    _, loss = model(x, y)
                (loss / cfg.grad_accum).backward()
            loss_sum += loss.detach()
            state.tokens += x.numel() * d.world_size
        if force_nan == state.step + 1:  # the test hook: this step's loss reads as NaN
            loss_sum = loss_sum * math.nan
        if masked is not None:
            if dynamic is not None and dynamic.due(state.step + 1):
                dynamic.update(state.step + 1, optimizer)  # reads the dense gradient
            masked.apply_to_grads()
        grad_norm = None
        if cfg.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        divergence.note(state.step + 1, loss_sum, grad_norm)
        optimizer.step()
        if masked is not None:
            masked.after_step(optimizer)
        optimizer.zero_grad(set_to_none=True)
        state.step += 1

        last_step = state.step == cfg.steps
        want_log = state.step % cfg.log_every == 0 or last_step
        want_eval = hooks.evaluate is not None and (state.step % cfg.eval_every == 0 or last_step)
        saved = state.step % cfg.checkpoint_every == 0 or last_step
        stop = interrupt.requested()
        if want_log or want_eval or saved or stop:  # before anything of this step is kept
            divergence.check(d, cfg.name)
        if want_log or want_eval:
            train_loss = float(mean_across(loss_sum / cfg.grad_accum, d))
            val_loss = hooks.evaluate() if want_eval else None  # type: ignore[misc]
            dt = time.perf_counter() - t0
            tok_s = (state.tokens - tokens0) / dt if dt > 0 else 0.0
            row = {"step": state.step, "train_loss": train_loss, "val_loss": val_loss, "lr": lr}
            state.curve.append(row)
            if hooks.log is not None and d.is_main:
                metrics = {
                    "train_loss": train_loss,
                    "lr": lr,
                    "tokens_per_s": tok_s,
                    "tokens": float(state.tokens),
                }
                if val_loss is not None:
                    metrics["val_loss"] = val_loss
                    metrics["val_ppl"] = float(torch.tensor(val_loss).exp())
                if flops_per_step and dt > 0:
                    steps_done = (state.tokens - tokens0) / max(
                        1, x.numel() * d.world_size * cfg.grad_accum
                    )
                    achieved = flops_per_step * steps_done / dt
                    metrics["flops_per_s"] = achieved
                    if peak_flops:
                        metrics["mfu"] = achieved / (peak_flops * d.world_size)
                hooks.log(state.step, metrics)
            t0, tokens0 = time.perf_counter(), state.tokens
        if hooks.checkpoint is not None and saved:
            hooks.checkpoint(state)
        if stop:  # asked to stop: keep this step, then stop
            if hooks.checkpoint is not None and not saved:
                hooks.checkpoint(state)
            interrupt.check()
    return state


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    d: Dist,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """Mean loss over all ranks' validation batches, each batch weighing the same.

    Each rank passes its share of one global list of batches; sums and counts are all-reduced,
    so the result does not depend on the number of processes.
    """
    was_training = model.training
    model.eval()
    acc = torch.zeros(2, device=d.device)  # (sum of batch losses, batches)
    for batch in batches:
        batch = batch.to(d.device)
        with autocast(d.device, amp_dtype):
            _, loss = model(batch[:, :-1], batch[:, 1:])
        acc[0] += loss.float()
        acc[1] += 1
    model.train(was_training)
    acc = mean_across(acc, d) * d.world_size  # the sums over ranks
    return float(acc[0] / acc[1]) if acc[1] > 0 else float("nan")
