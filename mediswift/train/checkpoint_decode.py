"""Format 2's stored tensors decoded when asked for (`Stored`): straight into a live tensor
(a parameter, a mask) or whole, each once. Masked tensors are stored as their kept values and
the masks as packed bits (`mediswift.train.packing`); format 1 files hold every tensor whole.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from mediswift.train import packing
from mediswift.train.checkpoint_layout import MASKS_FILE, TENSOR_FILES, format_of, load_tensor_file


class Stored:
    """The tensor files of a checkpoint as they lie on disk (mapped, not decoded), each tensor
    decoded when asked for: straight into a live tensor (`fill`, `fill_mask`) or whole
    (`tensors`, kept once decoded, so nothing is decoded twice). Format 2 masks stay packed
    and are unpacked a chunk at a time; format 1 files hold every tensor whole already."""

    def __init__(self, path: Path, names: tuple[str, ...] = TENSOR_FILES):
        self.path = Path(path)
        fmt = format_of(self.path)
        present = [n for n in TENSOR_FILES if (self.path / n).is_file()]
        # Format 2 decodes with the masks: they are read whichever files are asked for.
        wanted = [n for n in present if n in names or (fmt >= 2 and n == MASKS_FILE)]
        self.raw = {n: load_tensor_file(self.path / n) for n in wanted}
        self.names = tuple(n for n in wanted if n in names)
        self.packed: dict[str, packing.Packed] = {}
        if fmt >= 2 and MASKS_FILE in self.raw:
            self.packed = packing.packed_masks(self.raw[MASKS_FILE])
        self.decoded: dict[str, _Decoded] = {}
        # Weights decoded from kept values into a live model (`fill_model`): zero outside
        # their masks already, bit for bit as saved.
        self.filled_through_mask: set[str] = set()

    def has(self, file: str) -> bool:
        return file in self.names

    def tensors(self, file: str) -> Mapping[str, torch.Tensor]:
        """The whole tensors of `file` by name ({} when absent), each decoded on first use."""
        if not self.has(file):
            return {}
        if file == MASKS_FILE:
            return self.bool_masks()
        if file not in self.decoded:
            self.decoded[file] = _Decoded(self.raw[file], self.packed)
        return self.decoded[file]

    def bool_masks(self) -> dict[str, torch.Tensor]:
        """Every mask whole, as bool (what the sharded resume compares)."""
        raw = self.raw.get(MASKS_FILE, {})
        return packing.unpack_masks(raw) if self.packed else dict(raw)

    def mask_names(self) -> list[str]:
        if self.packed:
            return sorted(self.packed)
        return sorted(self.raw.get(MASKS_FILE, {}))

    def keys(self, file: str) -> dict[str, str]:
        """Each whole tensor's name in `file` -> the key that holds it (`stored_keys`)."""
        return packing.stored_keys(self.raw[file])

    def fill(self, dest: torch.Tensor, file: str, key: str) -> None:
        """The tensor stored under `key` of `file` into `dest` (see `_fill_one`)."""
        _fill_one(dest, key, self.raw[file], self.packed)

    def fill_mask(self, dest: torch.Tensor, name: str) -> None:
        """Mask `name` into `dest` (of any dtype: 1 active, 0 pruned, as `copy_` of a bool
        mask writes), from its packed bits a chunk at a time when numpy can write `dest` (a
        contiguous CPU tensor of a numpy dtype): no bool copy of the whole mask."""
        if not self.packed:
            _copy_checked(dest, self.raw[MASKS_FILE][name], name)
            return
        mask = self.packed[name]
        if tuple(dest.shape) != mask.shape:
            raise ValueError(f"mask {name}: shape {mask.shape}, the run's is {tuple(dest.shape)}")
        flat = _numpy_view(dest)
        if flat is None:
            dest.copy_(self.one_mask(name))
            return
        # numpy, not torch: torch's copy_ of a small chunk costs a parallel region (~50x slower)
        for start in range(0, flat.size, packing.CHUNK):
            stop = min(start + packing.CHUNK, flat.size)
            flat[start:stop] = mask.chunk(start, stop)

    def one_mask(self, name: str) -> torch.Tensor:
        """Mask `name` whole, as bool."""
        if not self.packed:
            return self.raw[MASKS_FILE][name].bool()
        mask = self.packed[name]
        return torch.from_numpy(mask.chunk(0, math.prod(mask.shape))).reshape(mask.shape)


def _numpy_view(t: torch.Tensor) -> np.ndarray | None:
    """`t`'s memory, flat, as a numpy array, if numpy can write it (bfloat16 it cannot)."""
    if t.device.type != "cpu" or not t.is_contiguous():
        return None
    try:
        return t.detach().view(-1).numpy()
    except TypeError:  # a dtype numpy lacks
        return None


class _Decoded(Mapping[str, torch.Tensor]):
    """A stored file's tensors by name, each decoded whole on first use and kept: a part that
    reads a few entries (the RNG states) decodes nothing else, two that read the same one
    decode it once."""

    def __init__(self, raw: dict[str, torch.Tensor], masks: dict[str, packing.Packed]):
        self.raw, self.masks = raw, masks
        self.stored = packing.stored_keys(raw)
        self.done: dict[str, torch.Tensor] = {}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.done:
            self.done[name] = _whole(self.stored[name], self.raw, self.masks)
        return self.done[name]

    def __contains__(self, name: object) -> bool:
        return name in self.stored

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored)

    def __len__(self) -> int:
        return len(self.stored)


def _whole(
    key: str, tensors: dict[str, torch.Tensor], masks: dict[str, packing.Packed]
) -> torch.Tensor:
    """The whole tensor stored under `key`: as it is, or decoded from `<name>.values` (and its
    sign bits) into a fresh tensor of its mask's shape."""
    if not key.endswith(packing.VALUES):
        return tensors[key]
    base = key[: -len(packing.VALUES)]
    return packing.decode({k: tensors[k] for k in _parts(key, tensors)}, masks)[base]


def _fill_one(
    dest: torch.Tensor,
    key: str,
    weights: dict[str, torch.Tensor],
    masks: dict[str, packing.Packed],
) -> None:
    """One saved tensor into `dest`: decoded in place when it can be, else whole then copied
    (checking the shape first: `copy_` would broadcast a wrong one silently)."""
    if key.endswith(packing.VALUES) and _decodable_into(dest, weights[key]):
        packing.decode_into(dest, key, weights, masks)
        return
    # another dtype or device than saved, or stored whole: as it is or decoded, then converted
    _copy_checked(dest, _whole(key, weights, masks), key)


def _copy_checked(dest: torch.Tensor, whole: torch.Tensor, key: str) -> None:
    if whole.shape != dest.shape:
        raise RuntimeError(f"{key}: shape {tuple(whole.shape)}, the model has {tuple(dest.shape)}")
    dest.copy_(whole)


def _decodable_into(dest: torch.Tensor, values: torch.Tensor) -> bool:
    return dest.device.type == "cpu" and dest.is_contiguous() and dest.dtype == values.dtype


def _parts(key: str, tensors: dict[str, torch.Tensor]) -> list[str]:
    """`key` (`<name>.values`) and the sign bits stored with it, if any."""
    signs = key[: -len(packing.VALUES)] + packing.NEG_ZERO_BITS
    return [key, signs] if signs in tensors else [key]
