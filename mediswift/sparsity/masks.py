"""Static random unstructured sparsity, kept outside the model.

Masks are keyed by parameter name. Each sparsified matrix gets exactly round(s * numel) zeros
(uniform level s across the six matrices of every block, Section 3.3); embeddings, LayerNorms and
biases stay dense. Masks are drawn from their own seeded `torch.Generator`, so the same seed gives
the same masks regardless of how the model was initialised.

Keeping masked weights exactly zero for a whole run takes four things, all done here with one
`torch._foreach_mul_` over flat lists (no Python loop per tensor on the hot path):
  1. mask the weights once at init,
  2. mask the gradients after backward, before clipping (so clipping sees the sparse gradient),
  3. mask AdamW's moments (exp_avg, exp_avg_sq) so that no stale momentum revives a weight,
  4. re-apply the mask to the weights after every optimizer step.
(With 2 and 3 AdamW's update of a masked weight is already 0 and decoupled weight decay multiplies
it, so 4 is a guard that costs one more multiply.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

# (shape, generator) -> bool mask: a structured pattern (see semi24.py).
MaskPattern = Callable[[torch.Size | tuple[int, ...], torch.Generator], torch.Tensor]


def random_mask(
    shape: torch.Size | tuple[int, ...], sparsity: float, generator: torch.Generator
) -> torch.Tensor:
    """A bool mask (True = active) with exactly round(sparsity * numel) False entries."""
    n = 1
    for d in shape:
        n *= d
    n_zero = round(sparsity * n)
    mask = torch.ones(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=generator)[:n_zero]] = False
    return mask.view(shape)


def make_masks(
    model: nn.Module,
    sparsity: float,
    seed: int,
    names: Iterable[str] | None = None,
    pattern: MaskPattern | None = None,
) -> dict[str, torch.Tensor]:
    """Random masks for `names` (default: the model's `matrix_names()`), keyed by name, on CPU.

    `pattern(shape, generator)` draws a structured mask instead of `random_mask` (2:4, whose
    level is fixed: `sparsity` must then be the pattern's own). Returns {} for sparsity 0 (a
    dense model carries no masks).
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} must be in [0, 1)")
    if sparsity == 0.0:
        return {}
    params = dict(model.named_parameters())
    names = list(names) if names is not None else list(model.matrix_names())  # type: ignore[operator]
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in names:  # a fixed order, so the generator's stream maps to names reproducibly
        if name not in params:
            raise KeyError(f"no parameter named {name!r} to sparsify")
        shape = params[name].shape
        out[name] = pattern(shape, gen) if pattern else random_mask(shape, sparsity, gen)
    return out


@dataclass
class MaskCounts:
    total_params: int
    non_embedding_params: int
    active_params: int
    active_non_embedding_params: int


def count_active(model: nn.Module, masks: dict[str, torch.Tensor]) -> MaskCounts:
    """Parameter counts as in Table 2: the "size" of a sparse model is its active parameters."""
    total = model.num_params()  # type: ignore[operator]
    non_emb = model.num_params(non_embedding=True)  # type: ignore[operator]
    zeros = sum(int((~m).sum()) for m in masks.values())
    return MaskCounts(total, non_emb, total - zeros, non_emb - zeros)


class MaskedParams:
    """Masks bound to a model's live parameters (and, once it exists, to the optimizer state).

    `params[i]` is masked by `masks[i]`, a tensor of the parameter's dtype and device (1 active,
    0 pruned), so upkeep is a single fused multiply per kind of tensor.
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]):
        named = dict(model.named_parameters())
        # DDP / compile wrappers prefix names ("module.", "_orig_mod."): match on the suffix.
        self.names = sorted(masks)
        self.params: list[torch.Tensor] = []
        for name in self.names:
            p = named[name] if name in named else _by_suffix(named, name)
            if p.shape != masks[name].shape:
                raise ValueError(
                    f"mask {name} has shape {tuple(masks[name].shape)}, param {tuple(p.shape)}"
                )
            self.params.append(p)
        self.masks: list[torch.Tensor] = [
            _like(masks[n], p) for n, p in zip(self.names, self.params, strict=True)
        ]
        self.sharded = any(_is_dtensor(p) for p in self.params)
        self._source = {n: masks[n].to("cpu", torch.bool) for n in self.names}

    def __bool__(self) -> bool:
        return bool(self.params)

    def bool_masks(self) -> dict[str, torch.Tensor]:
        """The masks as CPU bool tensors keyed by name (what checkpoints store)."""
        if self.sharded:  # static only (see set_mask): the masks we were given
            return dict(self._source)
        return {
            n: m.detach().to("cpu", torch.bool) for n, m in zip(self.names, self.masks, strict=True)
        }

    def set_mask(self, i: int, mask: torch.Tensor) -> None:
        if self.sharded:
            raise NotImplementedError("dynamic sparsity needs whole matrices; not under FSDP")
        self.masks[i].copy_(mask)

    @torch.no_grad()
    def apply_to_weights(self, which: Sequence[int] | None = None) -> None:
        """Multiply the weights by their masks (only the matrices `which`, when given)."""
        which = range(len(self.params)) if which is None else which
        if which:
            torch._foreach_mul_(
                [self.params[i].data for i in which], [self.masks[i] for i in which]
            )

    @torch.no_grad()
    def apply_to_grads(self) -> None:
        pairs = [
            (p.grad, m) for p, m in zip(self.params, self.masks, strict=True) if p.grad is not None
        ]
        if pairs:
            grads, masks = zip(*pairs, strict=True)
            torch._foreach_mul_(list(grads), list(masks))

    @torch.no_grad()
    def after_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Re-mask the weights and AdamW's moments after `optimizer.step()` (one fused multiply)."""
        tensors, masks = [p.data for p in self.params], list(self.masks)
        for p, m in zip(self.params, self.masks, strict=True):
            state = optimizer.state.get(p)
            if not state:
                continue
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    tensors.append(state[key])
                    masks.append(m)
        if tensors:
            torch._foreach_mul_(tensors, masks)

    @torch.no_grad()
    def nonzeros_outside_mask(self) -> int:
        """How many pruned positions hold a nonzero weight (0 when upkeep works; for checks)."""
        return sum(
            int(((p != 0) & (m == 0)).sum()) for p, m in zip(self.params, self.masks, strict=True)
        )


def _is_dtensor(t: torch.Tensor) -> bool:
    return type(t).__name__ == "DTensor"


def _like(mask: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """`mask` as `p`'s dtype and device; sharded like `p` when `p` is an FSDP2 DTensor."""
    if _is_dtensor(p):
        from torch.distributed.tensor import distribute_tensor

        local = mask.to(device=p.device_mesh.device_type, dtype=p.dtype)
        return distribute_tensor(local, p.device_mesh, p.placements)
    return mask.to(device=p.device, dtype=p.dtype)


def _by_suffix(named: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    hits = [p for n, p in named.items() if n.endswith("." + name)]
    if len(hits) != 1:
        raise KeyError(f"no unique parameter named {name!r} in the model")
    return hits[0]
