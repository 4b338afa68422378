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


def _pack(flags: torch.Tensor | np.ndarray) -> torch.Tensor:
    flags = flags.numpy() if isinstance(flags, torch.Tensor) else flags
    return torch.from_numpy(np.packbits(flags.reshape(-1)))


def _unpack(bits: torch.Tensor, count: int) -> np.ndarray:
    return np.unpackbits(bits.numpy(), count=count).astype(bool)


# Element size -> (torch signed, numpy unsigned) integer types of that width. Values are moved
# as raw bits in numpy (its boolean compress/place are many times faster than torch's boolean
# indexing on CPU), so any float dtype round-trips exactly, NaN payloads and -0.0 included.
_INTS = {
    1: (torch.uint8, np.uint8),
    2: (torch.int16, np.uint16),
    4: (torch.int32, np.uint32),
    8: (torch.int64, np.uint64),
}


def _raw(t: torch.Tensor) -> np.ndarray:
    """The bits of `t`, flattened, as unsigned integers of its width."""
    signed, unsigned = _INTS[t.element_size()]
    return t.contiguous().reshape(-1).view(signed).numpy().view(unsigned)


def _from_raw(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    signed = a if a.itemsize == 1 else a.view(f"i{a.itemsize}")  # torch has no wide unsigned
    return torch.from_numpy(signed).view(dtype)


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
        out[name] = torch.from_numpy(_unpack(bits, int(np.prod(shape)))).reshape(shape)
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


class Positions:
    """Flat indices of the kept and the pruned entries of each mask, found once per mask (a
    weight and its two moments share them): numpy's take/put by index is several times faster
    than boolean indexing, numpy's or torch's. Share one across the files of a checkpoint."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks, self.found, self.kept_at = masks, {}, {}

    def __call__(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.found:
            kept = self.masks[name].reshape(-1).numpy()
            self.found[name] = (self.kept(name), np.flatnonzero(~kept))
        return self.found[name]

    def kept(self, name: str) -> np.ndarray:
        """The kept entries only: decoding needs no pruned indices (8 bytes for each pruned
        entry, more memory to fill than the tensor itself at 75%)."""
        if name not in self.kept_at:
            self.kept_at[name] = np.flatnonzero(self.masks[name].reshape(-1).numpy())
        return self.kept_at[name]


def _sign_bit(dtype: np.dtype) -> np.ndarray:
    return np.array(1, dtype) << np.array(8 * dtype.itemsize - 1, dtype)


def encode(
    tensors: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    positions: Positions | None = None,
) -> dict[str, torch.Tensor]:
    """`tensors` with each one a mask covers stored as its kept values (see the module doc)."""
    out, positions = {}, positions or Positions(masks)
    for key, t in tensors.items():
        name = mask_of(key, masks)
        if name is None or t.shape != masks[name].shape or not t.is_floating_point():
            out[key] = t  # not masked, or AdamW's scalar step
            continue
        kept, pruned_at = positions(name)
        raw = _raw(t)
        pruned = raw.take(pruned_at)
        if (pruned & (_sign_bit(raw.dtype) - 1)).any():  # a nonzero or NaN outside: as it is
            out[key] = t
            continue
        out[key + VALUES] = _from_raw(raw.take(kept), t.dtype)
        negative = pruned != 0  # every pruned entry is +-0: what is set is the sign bit
        if negative.any():
            out[key + NEG_ZERO_BITS] = _pack(negative)
    return out


def _set_signs(whole: np.ndarray, mask: torch.Tensor, bits: torch.Tensor) -> None:
    """Set the sign bit of the pruned entries that were -0.0. The bits are spread onto a bool
    array of the whole tensor (1 byte an entry) rather than indexed through the pruned
    positions (8 bytes an entry): the fewer bytes to fill, the faster the load."""
    pruned = ~mask.reshape(-1).numpy()
    negative = np.zeros(whole.size, bool)
    negative[pruned] = _unpack(bits, whole.size - int(np.count_nonzero(~pruned)))
    whole[np.flatnonzero(negative)] = _sign_bit(whole.dtype)


def decode(
    tensors: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor],
    positions: Positions | None = None,
) -> dict[str, torch.Tensor]:
    """`encode` undone: every tensor whole, bit for bit as it was saved."""
    out, positions = {}, positions or Positions(masks)
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
        kept, mask = positions.kept(name), masks[name]
        values = _raw(t)
        if kept.size != values.size:
            raise ValueError(f"{key}: {values.size} values for {kept.size} active entries")
        whole = np.zeros(mask.numel(), values.dtype)
        whole[kept] = values
        if base + NEG_ZERO_BITS in tensors:
            _set_signs(whole, mask, tensors[base + NEG_ZERO_BITS])
        out[base] = _from_raw(whole, t.dtype).reshape(mask.shape)
    return out
