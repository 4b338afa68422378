"""Sparse tensors on disk (checkpoint format 2): a packed bitmask and the kept values.

A mask `M` (bool, True = active) of parameter `n` is stored once, in masks.safetensors, as
  `n.mask_bits`  uint8: `numpy.packbits` of M flattened (row-major, most significant bit first)
  `n.shape`      int64: M's shape
and each tensor masked by it (the weight `n`, its AdamW moments `optim.n.exp_avg` and
`optim.n.exp_avg_sq`) as
  `<key>.values`         the tensor's entries where M is True, in order (its own dtype)
  `<key>.neg_zero_bits`  only when some pruned entry is -0.0: packbits of the sign of every
                         pruned entry, in order. Masking multiplies by 0, so a negative weight
                         becomes -0.0; keeping its sign makes loading bit-identical, not only equal.
A tensor is stored so only when every entry outside M is zero (+0.0 or -0.0); any other value
(a mask that moved and a weight not yet re-masked, a NaN) keeps the tensor dense under its own
key, so decoding always gives back the exact bits that were saved.
"""

from __future__ import annotations

import numpy as np
import torch

MASK_BITS = ".mask_bits"
SHAPE = ".shape"
VALUES = ".values"
NEG_ZERO_BITS = ".neg_zero_bits"
OPTIM_PREFIX = "optim."  # AdamW state keys: optim.<param name>.<state key>


def _pack(flags: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(flags.reshape(-1).numpy()))


def _unpack(bits: torch.Tensor, count: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(bits.numpy(), count=count).astype(bool))


def pack_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Bool masks by name -> their packed bits and shapes (what masks.safetensors holds)."""
    out = {}
    for name, m in masks.items():
        m = m.to("cpu", torch.bool)
        out[name + MASK_BITS] = _pack(m)
        out[name + SHAPE] = torch.tensor(list(m.shape), dtype=torch.int64)
    return out


def unpack_masks(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`pack_masks` undone: bool masks by name."""
    out = {}
    for key, bits in tensors.items():
        if not key.endswith(MASK_BITS):
            continue
        name = key[: -len(MASK_BITS)]
        shape = tuple(int(d) for d in tensors[name + SHAPE])
        out[name] = _unpack(bits, int(np.prod(shape))).reshape(shape)
    return out


def mask_of(key: str, masks: dict[str, torch.Tensor]) -> str | None:
    """The name of the mask that covers tensor `key` (a weight or its AdamW state), if any."""
    if key in masks:
        return key
    if key.startswith(OPTIM_PREFIX):
        base = key[len(OPTIM_PREFIX) :].rsplit(".", 1)[0]
        if base in masks:
            return base
    return None


def encode(
    tensors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`tensors` with each one a mask covers stored as its kept values (see the module doc)."""
    out = {}
    for key, t in tensors.items():
        name = mask_of(key, masks)
        m = masks[name] if name is not None else None
        if m is None or t.shape != m.shape or not t.is_floating_point():
            out[key] = t  # not masked, or AdamW's scalar step
            continue
        pruned = t[~m]
        if bool((pruned != 0).any()):  # NaN != 0 too: such a tensor stays as it is
            out[key] = t
            continue
        out[key + VALUES] = t[m]
        negative = torch.signbit(pruned)
        if bool(negative.any()):
            out[key + NEG_ZERO_BITS] = _pack(negative)
    return out


def decode(
    tensors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`encode` undone: every tensor whole, bit for bit as it was saved."""
    out = {}
    for key, t in tensors.items():
        if key.endswith(NEG_ZERO_BITS):
            continue  # read with its values
        if not key.endswith(VALUES):
            out[key] = t
            continue
        base = key[: -len(VALUES)]
        name = mask_of(base, masks)
        if name is None:
            raise ValueError(f"{key}: sparse values without a mask named for {base!r}")
        m = masks[name].reshape(-1)
        if int(m.sum()) != t.numel():
            raise ValueError(f"{key}: {t.numel()} values for {int(m.sum())} active entries")
        whole = torch.zeros(m.numel(), dtype=t.dtype)
        whole[m] = t
        if base + NEG_ZERO_BITS in tensors:
            pruned = torch.zeros(m.numel() - t.numel(), dtype=t.dtype)
            pruned[_unpack(tensors[base + NEG_ZERO_BITS], pruned.numel())] = -0.0
            whole[~m] = pruned
        out[base] = whole.reshape(masks[name].shape)
    return out
