"""Dynamic sparse training (beyond the paper; its Section 7 names it as future work).

Every `update_every` steps until `stop_fraction` of training, each sparsified matrix drops the
fraction f(t) of its active weights with the smallest magnitude and regrows as many connections:
  - SET (Mocanu et al., 2018): at random among the inactive positions;
  - RigL (Evci et al., 2020): where the dense gradient magnitude is largest.
f(t) = f0 / 2 * (1 + cos(pi * t / t_end)) (RigL's cosine schedule). Density stays exactly
constant. Newly grown weights start at zero with zeroed AdamW moments: the pruned positions'
weights and moments are already zero because `MaskedParams` keeps them so, and dropped ones are
zeroed by re-masking with the new mask.

The update must run after backward (and the DDP all-reduce) but before the gradients are masked:
RigL reads the dense gradient there. All ranks compute the same update (same weights, same
all-reduced gradients, same seeded generator), so masks never diverge across processes.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from mediswift.sparsity.masks import MaskedParams

Method = Literal["set", "rigl"]


def drop_fraction(step: int, initial: float, stop_step: int) -> float:
    """The cosine-decayed fraction of active weights to replace at `step` (0 after stop_step)."""
    if step >= stop_step:
        return 0.0
    return initial / 2 * (1 + math.cos(math.pi * step / stop_step))


class DynamicSparsity:
    def __init__(
        self,
        masked: MaskedParams,
        method: Method,
        total_steps: int,
        update_every: int = 100,
        initial_drop_fraction: float = 0.3,
        stop_fraction: float = 0.75,
        seed: int = 0,
    ):
        if method not in ("set", "rigl"):
            raise ValueError(f"unknown dynamic sparsity method {method!r} (set or rigl)")
        self.masked = masked
        self.method = method
        self.update_every = update_every
        self.initial = initial_drop_fraction
        self.stop_step = int(stop_fraction * total_steps)
        self.generator = torch.Generator().manual_seed(seed + 7919)

    def due(self, step: int) -> bool:
        """Whether `step` (1-based count of the step being taken) updates the masks."""
        return step % self.update_every == 0 and step < self.stop_step

    @torch.no_grad()
    def update(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> int:
        """Drop and regrow in every masked matrix; returns how many connections moved.

        With `optimizer`, the AdamW moments of every dropped and grown position are zeroed.
        """
        frac = drop_fraction(step, self.initial, self.stop_step)
        moved = 0
        for i, (p, m) in enumerate(zip(self.masked.params, self.masked.masks, strict=True)):
            active = m.flatten() > 0
            n_move = int(frac * int(active.sum()))
            if n_move == 0:
                continue
            w = p.detach().flatten().abs().float()
            # Drop: the n_move active weights of least magnitude.
            drop_score = torch.where(active, w, torch.full_like(w, math.inf))
            drop_idx = torch.topk(drop_score, n_move, largest=False).indices
            new = active.clone()
            new[drop_idx] = False
            # Grow: among positions inactive after the drop (a just-dropped one may return at 0).
            if self.method == "rigl":
                if p.grad is None:
                    raise RuntimeError("RigL needs the dense gradient: update before masking grads")
                score = p.grad.detach().flatten().abs().float()
            else:
                score = torch.rand(w.numel(), generator=self.generator).to(w.device)
            score = torch.where(new, torch.full_like(score, -math.inf), score)
            grow_idx = torch.topk(score, n_move).indices
            new[grow_idx] = True
            # Grown weights start at exactly zero (a just-dropped weight that regrows included).
            p.data.view(-1)[grow_idx] = 0
            state = optimizer.state.get(p, {}) if optimizer is not None else {}
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].view(-1)[grow_idx] = 0
                    state[key].view(-1)[drop_idx] = 0
            self.masked.set_mask(i, new.view_as(m).to(m.dtype))
            moved += n_move
        self.masked.apply_to_weights()
        return moved

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
