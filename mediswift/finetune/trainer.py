"""One dense fine-tune (Section 2.2.1, Appendices A.2-A.3): AdamW with linear warmup over 10% of
the steps and cosine decay, up to `epochs` epochs, the dev metric after every epoch, early
stopping after `patience` epochs without improvement, and the best dev state kept in memory.

The dev metric is also measured before the first step (epoch 0) and logged, to show what
fine-tuning gained; the kept state is the best of the fine-tuned epochs (1..epochs), so a grid
point always reports a fine-tuned model, as the paper's early stopping does.

Thread safety: several fine-tunes may run at once in one process (a Prefect thread pool), so
nothing here touches torch's global RNG: the data order comes from a seeded `torch.Generator`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from mediswift import interrupt
from mediswift.finetune.formats import Label, TaskFormat
from mediswift.finetune.scoring import Encoded, LossOn, Mode, TokenizerLike, batch_loss, evaluate
from mediswift.model.soft_prompt import PromptedLM
from mediswift.train import finite
from mediswift.train.optim import lr_at, param_groups, set_lr

LogFn = Callable[[dict[str, float], int], None]


@dataclass(frozen=True)
class TrainSettings:
    """One fine-tune's settings; the defaults live in `FinetuneConfig` only (see
    `mediswift.finetune.point.settings_for`)."""

    batch_size: int
    lr: float
    epochs: int
    seed: int
    patience: int
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    warmup_fraction: float
    min_lr_ratio: float
    grad_clip: float
    loss_on: LossOn
    early_stop_on: Mode
    eval_batch_size: int
    max_new_tokens: int | None = None  # generation bound (None: the task's own targets)
    log_every: int = 10  # steps between logged training losses


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]  # PromptedLM state dict (CPU copies), best epoch >= 1
    best_epoch: int
    best_dev: float
    steps: int
    stopped_early: bool
    history: list[dict[str, float]] = field(default_factory=list)
    # The best epoch's dev predictions in the early-stopping mode, and their generated texts
    # (empty unless generated): what predicting dev again from `best_state` would give.
    best_predictions: tuple[list[Label | None], list[str]] = field(default_factory=lambda: ([], []))


def make_optimizer(model: PromptedLM, s: TrainSettings) -> torch.optim.AdamW:
    """Fresh AdamW over every parameter (dense); the soft prompt, like embeddings, not decayed."""
    groups = param_groups(model.lm, s.weight_decay)
    groups[1]["params"].append(model.prompt.weight)
    return torch.optim.AdamW(groups, lr=s.lr, betas=s.betas, eps=s.eps, foreach=True)


def _state(model: PromptedLM) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit(
    model: PromptedLM,
    task: TaskFormat,
    tok: TokenizerLike,
    train: Sequence[Encoded],
    dev: Sequence[Encoded],
    s: TrainSettings,
    log: LogFn | None = None,
) -> FitResult:
    """Fine-tune `model` in place; returns the best dev state (the model ends at the last one)."""
    if not train or not dev:
        raise ValueError(
            f"{task.name}: fine-tuning needs train and dev examples "
            f"(got {len(train)} train, {len(dev)} dev)"
        )
    log = log or (lambda metrics, step: None)
    gen = torch.Generator().manual_seed(s.seed)
    steps_per_epoch = math.ceil(len(train) / s.batch_size)
    steps = _Steps(model, task, tok, s, make_optimizer(model, s), steps_per_epoch * s.epochs, log)

    def dev_eval() -> tuple[float, list[Label | None], list[str]]:
        return evaluate(model, task, tok, dev, s.early_stop_on, s.eval_batch_size, s.max_new_tokens)

    start = dev_eval()[0]
    best = FitResult({}, 0, -math.inf, 0, False)
    best.history.append({"epoch": 0, "step": 0, "dev_metric": start})
    log({"dev_metric": start}, 0)
    bad = 0
    model.train()
    for epoch in range(1, s.epochs + 1):
        order = torch.randperm(len(train), generator=gen).tolist()
        batches = [
            [train[j] for j in order[i : i + s.batch_size]]
            for i in range(0, len(order), s.batch_size)
        ]
        train_loss = steps.epoch(batches) / steps_per_epoch
        metric, preds, texts = dev_eval()
        best.history.append(
            {"epoch": epoch, "step": steps.step, "train_loss": train_loss, "dev_metric": metric}
        )
        log({"dev_metric": metric, "epoch_train_loss": train_loss}, steps.step)
        if metric > best.best_dev:
            best.best_state, best.best_epoch, best.best_dev, bad = _state(model), epoch, metric, 0
            best.best_predictions = (preds, texts)
        else:
            bad += 1
            if bad >= s.patience:
                best.stopped_early = epoch < s.epochs
                break
    best.steps = steps.step
    return best


@dataclass
class _Steps:
    """The optimizer steps of one fine-tune, epoch by epoch (`fit`)."""

    model: PromptedLM
    task: TaskFormat
    tok: TokenizerLike
    s: TrainSettings
    opt: torch.optim.AdamW
    total: int  # steps of every epoch: the schedule's length
    log: LogFn
    step: int = 0  # steps taken
    force_nan: int | None = field(default_factory=finite.forced_nan_step)  # the test hook

    def epoch(self, batches: list[list[Encoded]]) -> float:
        """One step per batch; returns the sum of the training losses."""
        s, opt = self.s, self.opt
        params = [p for g in opt.param_groups for p in g["params"]]
        running = 0.0
        for batch in batches:
            interrupt.check()  # a point is one unit: stopping drops it whole, nothing is marked
            lr = lr_at(self.step, self.total, s.lr, s.warmup_fraction, s.min_lr_ratio)
            set_lr(opt, lr)
            loss = batch_loss(self.model, batch, self.tok.pad_id, s.loss_on)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            value = math.nan if self.force_nan == self.step + 1 else loss.item()
            # Checked before the step: a diverged state must not become the kept best one.
            finite.check(value, "training loss", self.step + 1, self.task.name)
            if s.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
                finite.check(float(norm), "gradient norm", self.step + 1, self.task.name)
            opt.step()
            self.step += 1
            running += value
            if self.step % s.log_every == 0:
                self.log({"train_loss": value, "lr": lr}, self.step)
        return running
