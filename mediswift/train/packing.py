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

Decoding writes each tensor once, a chunk at a time, straight from the packed bits, into memory
it is given (`decode_into`: a model's parameter) or a fresh tensor (`decode`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
    than boolean indexing, numpy's or torch's. Share one across the files of a checkpoint
    being written (decoding works a chunk at a time instead: see `CHUNK`)."""

    def __init__(self, masks: dict[str, torch.Tensor]):
        self.masks, self.found = masks, {}

    def __call__(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.found:
            flat = self.masks[name].reshape(-1).numpy()
            self.found[name] = (np.flatnonzero(flat), np.flatnonzero(~flat))
        return self.found[name]


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


# Entries decoded at a time (a multiple of 8, so a chunk starts on a byte of packed bits): the
# index arrays a chunk needs stay small and in cache, and no index array of a whole tensor is
# ever made. Fresh memory is what loading costs most (each new page is a fault the kernel
# zeroes), so a decode writes the destination once and allocates little else.
CHUNK = 1 << 16


@dataclass(frozen=True)
class Packed:
    """A mask as masks.safetensors stores it (packed bits, most significant first, and its
    shape), unpacked a chunk at a time while decoding: no bool copy of the whole mask."""

    bits: np.ndarray
    shape: tuple[int, ...]

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return np.unpackbits(self.bits[start // 8 :], count=stop - start).view(bool)

    def count(self) -> int:
        return int(np.bitwise_count(self.bits).sum())  # the padding bits are 0


def packed_masks(tensors: dict[str, torch.Tensor]) -> dict[str, Packed]:
    """The masks of masks.safetensors by name, still packed (what decoding needs)."""
    return {
        key[: -len(MASK_BITS)]: Packed(
            bits.numpy(), tuple(int(d) for d in tensors[key[: -len(MASK_BITS)] + SHAPE])
        )
        for key, bits in tensors.items()
        if key.endswith(MASK_BITS)
    }


def _flags(mask: torch.Tensor | Packed) -> tuple[Callable[[int, int], np.ndarray], int]:
    """(start, stop) -> the mask's flags there, and how many are True; bool or packed."""
    if isinstance(mask, Packed):
        return mask.chunk, mask.count()
    flat = mask.reshape(-1).numpy()
    return (lambda start, stop: flat[start:stop]), int(np.count_nonzero(flat))


def stored_keys(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """The name of each whole tensor in a decoded file -> the key that holds it: its own key
    (a dense tensor) or `<name>.values` (a masked one, its signs read along with it)."""
    out = {}
    for key in tensors:
        if key.endswith(NEG_ZERO_BITS):
            continue
        out[key[: -len(VALUES)] if key.endswith(VALUES) else key] = key
    return out


def decode_into(
    dest: torch.Tensor,
    key: str,
    tensors: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor] | dict[str, Packed],
) -> None:
    """Decode the masked tensor stored under `key` (`<name>.values`) straight into `dest`, a
    contiguous CPU tensor of the mask's shape and the values' dtype (a model's parameter):
    every entry of `dest` is written, nothing else of its size is allocated."""
    base = key[: -len(VALUES)]
    name = mask_of(base, masks)
    if name is None:
        raise ValueError(f"{key}: sparse values without a mask named for {base!r}")
    mask, values = masks[name], tensors[key]
    if (
        dest.shape != mask.shape
        or dest.dtype != values.dtype
        or dest.device.type != "cpu"
        or not dest.is_contiguous()
    ):
        raise ValueError(f"{key}: cannot decode into a {dest.dtype} tensor of {tuple(dest.shape)}")
    flags, active = _flags(mask)
    if active != values.numel():
        raise ValueError(f"{key}: {values.numel()} values for {active} active entries")
    signs = tensors.get(base + NEG_ZERO_BITS)
    signs = None if signs is None else signs.numpy()
    _scatter(_raw(dest), _raw(values), flags, signs)  # _raw(dest): a view, dest is contiguous


def _scatter(
    out: np.ndarray,
    values: np.ndarray,
    flags: Callable[[int, int], np.ndarray],
    signs: np.ndarray | None,
) -> None:
    """Write `out` chunk by chunk: 0 everywhere, the kept values where the flags are set, in
    order, and the sign bit on the pruned entries whose bit in `signs` is set."""
    taken = pruned_seen = 0
    sign = _sign_bit(out.dtype)
    for start in range(0, out.size, CHUNK):
        stop = min(start + CHUNK, out.size)
        kept, part = flags(start, stop), out[start:stop]
        part.fill(0)
        at = np.flatnonzero(kept)  # take/put by index: several times faster than by bool
        part[at] = values[taken : taken + at.size]
        taken += at.size
        if signs is not None:
            pruned = np.flatnonzero(~kept)
            negative = np.unpackbits(signs[pruned_seen // 8 :], count=pruned_seen % 8 + pruned.size)
            # as bool: numpy's nonzero has a fast path for bool only (uint8: ~8x slower)
            part[pruned.take(np.flatnonzero(negative[pruned_seen % 8 :].view(bool)))] = sign
            pruned_seen += pruned.size


def decode(
    tensors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | dict[str, Packed]
) -> dict[str, torch.Tensor]:
    """`encode` undone: every tensor whole, bit for bit as it was saved."""
    out = {}
    for base, key in stored_keys(tensors).items():
        if key == base:
            out[base] = tensors[key]
            continue
        name = mask_of(base, masks)
        shape = masks[name].shape if name is not None else tensors[key].shape
        out[base] = torch.empty(shape, dtype=tensors[key].dtype)
        decode_into(out[base], key, tensors, masks)
    return out
