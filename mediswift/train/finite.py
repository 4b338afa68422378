"""Stopping a run whose loss or gradients stopped being numbers.

A NaN or Inf loss poisons every weight the next optimizer step touches; a run that went on would
save damaged checkpoints and mark its unit done. Pre-training and fine-tuning both raise
`NonFiniteLoss` instead, before anything of the step is saved.

`FORCE_NAN_ENV` is the one fault hook: a test sets it to a step number and that step's loss reads
as NaN, so the path that stops a diverged run can be exercised without waiting for a real
divergence (it is read here only, and inherited by torchrun workers).
"""

from __future__ import annotations

import math
import os

FORCE_NAN_ENV = "MEDISWIFT_FAULT_NAN_STEP"


class NonFiniteLoss(RuntimeError):
    """A training loss or gradient norm that is NaN or Inf: the run must not go on."""


def forced_nan_step() -> int | None:
    """The step (1-based, as logged) whose loss the fault hook makes NaN; None when unset."""
    raw = os.environ.get(FORCE_NAN_ENV, "").strip()
    return int(raw) if raw else None


def diverged(what: str, step: int, where: str = "") -> NonFiniteLoss:
    """The error for `what` (the training loss, the gradient norm) gone non-finite at `step`
    of `where` (the unit or variant)."""
    prefix = f"{where}: " if where else ""
    return NonFiniteLoss(
        f"{prefix}{what} is not finite (NaN or Inf) at step {step}: training diverged; nothing "
        "after the last checkpoint is saved and the unit is not marked done (lower the learning "
        "rate, or check the data)"
    )


def check(value: float, what: str, step: int, where: str = "") -> None:
    """Raise `diverged(...)` when `value` is NaN or Inf."""
    if not math.isfinite(value):
        raise diverged(what, step, where)
