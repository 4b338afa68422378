"""2:4 semi-structured sparsity: in every group of 4 consecutive weights along the input
dimension, 2 are kept. It is the one pattern GPU sparse tensor cores run (Ampere and newer:
cuSPARSELt or CUTLASS through `torch.sparse.to_sparse_semi_structured`), always at 50%.

The masks are static and random (like the paper's unstructured ones, only constrained per
group), drawn from their own generator; the rest of the upkeep (gradients, AdamW moments,
weights) is `MaskedParams`' as for any mask.

On CUDA, `use_semi24_kernels` swaps the forward pass of each 2:4-masked `nn.Linear` for one that
multiplies by the compressed weight. Only the forward product (and nothing of the backward pass)
can use the kernel: the input gradient multiplies by W^T, whose groups of 4 run along the output
dimension, where the 2:4 pattern does not hold; the weight gradient is a dense product of
activations. The compressed weight is rebuilt when the weight may have changed: after each step
of the optimizer the kernels are attached to, or when its version counter moves (a checkpoint
load); micro-batches of one step share it. The version alone would miss optimizer steps: fused
AdamW (the recipe's optimizer on CUDA) updates weights without bumping their version counter.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from mediswift.sections import SEMI24_LEVEL

GROUP, KEEP = 4, 2
SPARSITY = SEMI24_LEVEL  # the only level a 2:4 pattern has: 1 - KEEP / GROUP
assert SPARSITY == 1 - KEEP / GROUP


def semi24_mask(shape: torch.Size | tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A bool mask (True = active) of a (out, in) weight keeping 2 random weights of every 4
    consecutive ones along `in` (the last dimension)."""
    if len(shape) != 2 or shape[-1] % GROUP:
        raise ValueError(f"2:4 sparsity needs a matrix whose input dimension divides by 4: {shape}")
    rows, cols = shape
    # A random permutation of each group's 4 positions; its first 2 are kept.
    order = torch.rand(rows, cols // GROUP, GROUP, generator=generator).argsort(dim=-1)
    mask = torch.zeros(rows, cols // GROUP, GROUP, dtype=torch.bool)
    mask.scatter_(-1, order[..., :KEEP], True)
    return mask.view(rows, cols)


def is_semi24(mask: torch.Tensor) -> bool:
    """Whether every group of 4 along the last dimension keeps exactly 2."""
    if mask.shape[-1] % GROUP:
        return False
    per_group = mask.reshape(*mask.shape[:-1], -1, GROUP).to(torch.int8).sum(-1)
    return bool((per_group == KEEP).all())


class _Semi24Linear(torch.autograd.Function):
    """y = x W^T + b with the forward product on the compressed 2:4 weight; backward dense."""

    @staticmethod
    def forward(ctx, x, weight, bias, compressed):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        flat = x.reshape(-1, x.shape[-1])  # (B*T, in)
        y = F.linear(flat, compressed)  # (B*T, out): the semi-structured kernel
        if bias is not None:
            y = y + bias
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        g = grad_y.reshape(-1, grad_y.shape[-1])  # (B*T, out)
        grad_x = (g @ weight).view(x.shape)  # W^T is not 2:4 along its reduction dimension
        grad_w = g.t() @ x.reshape(-1, x.shape[-1])  # (out, in), masked later like any gradient
        grad_b = g.sum(0) if ctx.has_bias else None
        return grad_x, grad_w, grad_b, None


class Semi24Kernels:
    """What `use_semi24_kernels` did: layers swapped (or why none), and the optimizer steps
    that invalidate the compressed weights."""

    def __init__(self) -> None:
        self.swapped = 0
        self.why = ""
        self.steps: int | None = None  # None: not attached, compress on every forward

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Compress each weight once per step of `optimizer` (not once per forward)."""
        self.steps = 0

        def stepped(*_: object) -> None:
            self.steps += 1  # type: ignore[operator]

        optimizer.register_step_post_hook(stepped)


def _semi24_forward(module: nn.Linear, to_sparse: Callable, kernels: Semi24Kernels) -> Callable:
    cache: dict[str, object] = {"key": None, "compressed": None}

    def forward(x: torch.Tensor) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
        w = module.weight.to(dtype)  # autograd carries the gradient back to the fp32 weight
        b = module.bias.to(dtype) if module.bias is not None else None
        key = (module.weight._version, kernels.steps, dtype)
        if kernels.steps is None or cache["key"] != key:  # the weight may have changed
            cache["compressed"] = to_sparse(w.detach().contiguous())
            cache["key"] = key
        with torch.autocast("cuda", enabled=False):
            return _Semi24Linear.apply(x.to(dtype), w, b, cache["compressed"])

    return forward


def use_semi24_kernels(model: nn.Module, masks: dict[str, torch.Tensor]) -> Semi24Kernels:
    """Run the forward product of each 2:4-masked linear layer of a CUDA `model` on the
    semi-structured kernels; `attach` the result to the optimizer. A layer whose weight the
    kernels refuse (shape, dtype, device) stays dense; `why` says why where none was swapped."""
    kernels = Semi24Kernels()
    first = next(iter(model.parameters()))
    if not masks or first.device.type != "cuda":
        kernels.why = "the semi-structured kernels run on CUDA only" if masks else "no masks"
        return kernels
    try:
        from torch.sparse import to_sparse_semi_structured
    except ImportError:
        kernels.why = f"torch {torch.__version__} has no semi-structured sparse tensors"
        return kernels
    modules = dict(model.named_modules())
    dtype = torch.bfloat16
    for name in sorted(masks):
        module = modules.get(name.removesuffix(".weight"))
        if not isinstance(module, nn.Linear) or not is_semi24(masks[name]):
            continue
        try:  # a trial compression: the kernels' own shape and hardware checks
            to_sparse_semi_structured(module.weight.detach().to(dtype).contiguous())
        except (RuntimeError, ValueError, NotImplementedError) as e:
            kernels.why = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
            continue
        swap = _semi24_forward(module, to_sparse_semi_structured, kernels)
        module.forward = swap  # type: ignore[method-assign]
        kernels.swapped += 1
    return kernels
