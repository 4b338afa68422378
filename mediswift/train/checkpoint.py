"""Checkpoints: safetensors + JSON only, so loading never unpickles anything.

A checkpoint is a directory:
  config.json              the GPTConfig (and `format`)
  model.safetensors        the weights (the tied output layer is `wte.weight`, stored once)
  masks.safetensors        the masks keyed by parameter name, packed 8 to a byte (absent when
                           dense)
  train_state.safetensors  AdamW moments and steps keyed by parameter name, RNG states, and the
                           dynamic-sparsity generator (absent in weights-only checkpoints)
Format 2 stores every masked weight and AdamW moment as its kept values only, the mask once
(`mediswift.train.packing`): a 75% sparse matrix takes about a quarter of its dense bytes, and
loading gives back the dense tensors bit for bit; `load_model` decodes them straight into the
parameters of a model built without initialising them, and resuming (`Stored`, read once) into
the run's parameters and masks, each moment once into its own tensor. Format 1 (every tensor
dense, masks as bool) still loads.
  train_state.json         step, tokens, loss-curve rows, optimizer hyperparameters, the loader
                           position of every rank
  digests.json             the sha256 and size of every other file (absent in checkpoints
                           written before it existed): a truncated file or a flipped bit is
                           found before resuming (`verify`), not trained on
It is written under a temporary name in the same folder and renamed into place, so a directory
named `step_<n>` is always complete; a run killed while writing leaves only a `.tmp-` folder.

This module is the layout (files, atomic writes, loaders). What a pre-training run puts in it,
part by part, is `mediswift.train.state`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mediswift.artifacts import file_digest
from mediswift.model.gpt import GPT, GPTConfig
from mediswift.train import packing

# 2: masked tensors as kept values + packed masks (format 1: all dense, bool masks).
FORMAT = 2
READABLE_FORMATS = (1, 2)
STEP_PREFIX = "step_"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
MASKS_FILE = "masks.safetensors"
TRAIN_TENSORS_FILE = "train_state.safetensors"
TRAIN_JSON_FILE = "train_state.json"
DIGESTS_FILE = "digests.json"
TENSOR_FILES = (MODEL_FILE, MASKS_FILE, TRAIN_TENSORS_FILE)


class DamagedCheckpoint(ValueError):
    """A checkpoint file that is cut short, fails to parse or no longer matches its digest."""

    def __init__(self, file: Path, why: str):
        super().__init__(f"{file}: {why}")
        self.file = file


def _unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}


def _full(t: torch.Tensor) -> torch.Tensor:
    """A whole tensor from an FSDP2 shard (a collective: every rank must call it)."""
    return t.full_tensor() if type(t).__name__ == "DTensor" else t


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The bare model's weights on CPU (gathered whole under FSDP: call it on every rank)."""
    return _cpu({k: _full(v) for k, v in _unwrap(model).state_dict().items()})


def save_checkpoint(
    path: Path,
    model: nn.Module,
    masks: dict[str, torch.Tensor] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    train_state: dict[str, Any] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
    weights: dict[str, torch.Tensor] | None = None,
    optimizer_state: tuple[dict[str, torch.Tensor], list[dict[str, Any]]] | None = None,
) -> Path:
    """Write a complete checkpoint at `path` atomically (temp folder, then rename).

    `weights` and `optimizer_state` (from `model_state` / `optimizer_tensors`) replace the ones
    read from `model` / `optimizer`: under FSDP every rank gathers them, rank 0 passes them here.
    """
    bare = _unwrap(model)
    files = {MODEL_FILE: weights if weights is not None else model_state(bare)}
    if masks:
        files[MASKS_FILE] = {k: v.to("cpu", torch.bool) for k, v in masks.items()}
    train_json = None
    if optimizer is not None or optimizer_state is not None or train_state is not None:
        tensors, groups = {}, []
        if optimizer_state is not None:
            tensors, groups = dict(optimizer_state[0]), optimizer_state[1]
        elif optimizer is not None:
            tensors, groups = optimizer_tensors(bare, optimizer)
        files[TRAIN_TENSORS_FILE] = {**tensors, **(extra_tensors or {})}
        train_json = {**(train_state or {}), "optimizer_groups": groups}
    return write_checkpoint(path, bare.config, files, train_json)


def write_checkpoint(
    path: Path,
    config: GPTConfig,
    files: dict[str, dict[str, torch.Tensor]],
    train_json: dict[str, Any] | None = None,
) -> Path:
    """Write config.json, each safetensors file of `files` (name -> tensors) and, when given,
    train_state.json into a temporary folder, then rename it to `path` (atomic)."""
    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / CONFIG_FILE).write_text(
        json.dumps({"format": FORMAT, "model": config.to_dict()}, indent=2) + "\n"
    )
    for name, tensors in _packed(files).items():
        save_file(tensors, str(tmp / name))
    if train_json is not None:
        (tmp / TRAIN_JSON_FILE).write_text(json.dumps(train_json, indent=1) + "\n")
    _write_digests(tmp)  # inside the temporary folder: a complete checkpoint always has them
    _fsync_dir(tmp)
    if path.exists():  # re-saving the same step (a resumed run reaching it again)
        old = path.with_name(f".old-{path.name}-{os.getpid()}")
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def _write_digests(folder: Path) -> None:
    digests = {
        f.name: {"sha256": file_digest(f), "bytes": f.stat().st_size}
        for f in sorted(folder.iterdir())
        if f.is_file() and f.name != DIGESTS_FILE
    }
    (folder / DIGESTS_FILE).write_text(json.dumps(digests, indent=1) + "\n")


def verify(path: Path) -> None:
    """Raise `DamagedCheckpoint` naming the first file of checkpoint `path` whose size or sha256
    differs from digests.json (nothing to check in a checkpoint written without one)."""
    path = Path(path)
    listed = path / DIGESTS_FILE
    if not listed.is_file():
        return
    for name, want in _json(listed).items():
        f = path / name
        if not f.is_file():
            raise DamagedCheckpoint(f, "missing")
        if f.stat().st_size != want["bytes"]:
            raise DamagedCheckpoint(f, f"{f.stat().st_size} bytes, {want['bytes']} written")
        if file_digest(f) != want["sha256"]:
            raise DamagedCheckpoint(f, "sha256 differs from the one written")


def _json(file: Path) -> Any:
    """A checkpoint's JSON file, a `DamagedCheckpoint` when it does not parse."""
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedCheckpoint(file, f"not JSON ({e})") from e


def _load_file(file: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, a `DamagedCheckpoint` when cut short or unparseable."""
    try:
        return load_file(str(file))
    except SafetensorError as e:
        raise DamagedCheckpoint(file, str(e)) from e


def _packed(files: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """The files as format 2 stores them: on CPU, masked tensors as values, masks packed."""
    for name in files:
        if name not in TENSOR_FILES:
            raise ValueError(f"{name} is not a file of the checkpoint format")
    out = {name: _cpu(tensors) for name, tensors in files.items()}
    masks = {k: v.bool() for k, v in out.pop(MASKS_FILE, {}).items()}
    if not masks:
        return out
    positions = packing.Positions(masks)
    out = {name: packing.encode(tensors, masks, positions) for name, tensors in out.items()}
    return {**out, MASKS_FILE: packing.pack_masks(masks)}


def read_tensors(
    path: Path, names: tuple[str, ...] = TENSOR_FILES
) -> dict[str, dict[str, torch.Tensor]]:
    """Safetensors file name -> its tensors on CPU, whole (as `write_checkpoint` was given
    them, bool masks included), for the files of `names` that checkpoint `path` has."""
    stored = Stored(path, names)
    return {n: dict(stored.tensors(n)) for n in names if stored.has(n)}


class Stored:
    """The tensor files of a checkpoint as they lie on disk (mapped, not decoded), each tensor
    decoded when asked for: straight into a live tensor (`fill`, `fill_mask`) or whole
    (`tensors`, kept once decoded, so nothing is decoded twice). Format 2 masks stay packed
    and are unpacked a chunk at a time; format 1 files hold every tensor whole already."""

    def __init__(self, path: Path, names: tuple[str, ...] = TENSOR_FILES):
        self.path = Path(path)
        fmt = _format(self.path)
        present = [n for n in TENSOR_FILES if (self.path / n).is_file()]
        # Format 2 decodes with the masks: they are read whichever files are asked for.
        wanted = [n for n in present if n in names or (fmt >= 2 and n == MASKS_FILE)]
        self.raw = {n: _load_file(self.path / n) for n in wanted}
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


def read_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """(safetensors file name -> tensors on CPU, whole, train_state.json or {}) of checkpoint
    `path`, after checking its digests and format (a damaged checkpoint raises
    `DamagedCheckpoint`). Resuming reads it as `Stored` instead, decoding into the run."""
    path = Path(path)
    verify(path)
    return read_tensors(path), read_train_json(path)


def read_train_json(path: Path) -> dict[str, Any]:
    """train_state.json of checkpoint `path`; {} in a weights-only checkpoint."""
    js = Path(path) / TRAIN_JSON_FILE
    return _json(js) if js.is_file() else {}


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def optimizer_tensors(
    model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """AdamW state keyed `optim.<param name>.<key>`, and the groups' hyperparameters as JSON."""
    names = {id(p): n for n, p in _unwrap(model).named_parameters()}
    tensors = {}
    for p, st in optimizer.state.items():
        for key, value in st.items():
            t = _full(value) if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"optim.{names[id(p)]}.{key}"] = t
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k != "params"}
        | {"param_names": [names[id(p)] for p in g["params"]]}
        for g in optimizer.param_groups
    ]
    return _cpu(tensors), groups


def restore_optimizer(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    groups: list[dict[str, Any]],
    where: str = "checkpoint",
) -> None:
    """Load `optimizer_tensors` output back into `optimizer`, matching parameters by name.

    `tensors` may decode each entry when it is read (`Stored.tensors`): only the AdamW entries
    are read, each once."""
    bare = _unwrap(model)
    by_param = _optimizer_keys(tensors)
    params = dict(bare.named_parameters())
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(
            f"{where}: checkpoint has {len(groups)} optimizer groups, expected "
            f"{len(optimizer.param_groups)}"
        )
    state: dict[int, dict[str, torch.Tensor]] = {}
    out_groups, idx = [], 0
    for saved, live in zip(groups, optimizer.param_groups, strict=True):
        live_names = [n for n, p in params.items() if any(p is q for q in live["params"])]
        if sorted(live_names) != sorted(saved["param_names"]):
            raise ValueError(f"{where}: optimizer groups do not match the model's parameters")
        ids = []
        for pname in saved["param_names"]:
            st = {k: tensors[key] for k, key in by_param.get(pname, {}).items()}
            if st:
                state[idx] = {k: _shard_like(t, params[pname]) for k, t in st.items()}
            ids.append(idx)
            idx += 1
        g = {k: v for k, v in saved.items() if k != "param_names"}
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        out_groups.append({**g, "params": ids})
    # The saved order is the live order's permutation by names: reorder live groups to match.
    for saved, live in zip(groups, optimizer.param_groups, strict=True):
        live["params"] = [params[n] for n in saved["param_names"]]
    optimizer.load_state_dict({"state": state, "param_groups": out_groups})


def _optimizer_keys(tensors: Mapping[str, torch.Tensor]) -> dict[str, dict[str, str]]:
    """Parameter name -> AdamW state key (`step`, `exp_avg`, ...) -> its key in `tensors`
    (`optim.<param name>.<state key>`; a state key has no dot, a parameter name may)."""
    out: dict[str, dict[str, str]] = {}
    for key in tensors:
        if key.startswith(packing.OPTIM_PREFIX):
            pname, _, state_key = key[len(packing.OPTIM_PREFIX) :].rpartition(".")
            out.setdefault(pname, {})[state_key] = key
    return out


def load_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> None:
    """Copy whole `weights` (from `model_state`) into a built model, strictly: into its shards
    under FSDP2 (a collective then: every rank must call it), through DDP/compile wrappers."""
    bare = _unwrap(model)
    live = bare.state_dict()
    bare.load_state_dict(
        {k: _shard_like(t, live[k]) if k in live else t for k, t in weights.items()}, strict=True
    )


def _shard_like(t: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A saved whole tensor (a weight or moment) as a shard of `p` when `p` is an FSDP2 DTensor
    (scalars such as AdamW's step stay whole)."""
    if type(p).__name__ != "DTensor" or t.shape != p.shape:
        return t
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(t.to(p.device_mesh.device_type), p.device_mesh, p.placements)


def _config_json(path: Path) -> dict[str, Any]:
    cfg_file = Path(path) / CONFIG_FILE
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} is not a checkpoint (no config.json)")
    data = _json(cfg_file)
    if data.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{cfg_file}: unsupported checkpoint format {data.get('format')!r}")
    return data


def _format(path: Path) -> int:
    return int(_config_json(path)["format"])


def read_config(path: Path) -> GPTConfig:
    return GPTConfig.from_dict(_config_json(path)["model"])


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The whole weights of checkpoint `path` (model.safetensors decoded), on CPU."""
    return read_tensors(path, (MODEL_FILE,))[MODEL_FILE]


def load_model(path: Path, device: str | torch.device = "cpu") -> GPT:
    """The GPT saved in checkpoint dir `path`, loaded strictly (every weight must match).

    The model is built without initialising its parameters and the checkpoint is decoded
    straight into them: no random init that is overwritten anyway, no dense intermediate per
    matrix, no second copy through `load_state_dict`."""
    path = Path(path)
    model = _uninitialised_gpt(read_config(path))
    fill_weights(model, path)
    return model.to(device)


def _uninitialised_gpt(config: GPTConfig) -> GPT:
    """A GPT whose parameters are allocated on the CPU but hold whatever memory held: only for
    filling from a checkpoint, which `fill_weights` checks covers every one of them. Built on
    the meta device: no random init that would be overwritten anyway."""
    with torch.device("meta"):
        model = GPT(config)
    if any(True for _ in model.buffers()):  # one the checkpoint may not hold: built as usual
        return GPT(config)
    return model.to_empty(device="cpu")


def fill_weights(model: nn.Module, path: Path) -> None:
    """Decode model.safetensors of checkpoint `path` into the parameters and buffers of an
    unsharded model, in place, strictly: the same names and shapes as its state dict."""
    fill_model(model, Stored(path, (MODEL_FILE,)))


def restore_weights(model: nn.Module, stored: Stored) -> None:
    """The weights of `stored` into a built model: decoded straight into its parameters when
    they are whole tensors, else (FSDP2 shards) whole and then split (`load_weights`)."""
    if _has_dtensors(model):
        load_weights(model, stored.tensors(MODEL_FILE))
    else:
        fill_model(model, stored)


def _has_dtensors(model: nn.Module) -> bool:
    return any(type(t).__name__ == "DTensor" for t in _unwrap(model).state_dict().values())


def fill_model(model: nn.Module, stored: Stored) -> None:
    """The weights of `stored` into the parameters and buffers of an unsharded model, in
    place, strictly: the same names and shapes as its state dict."""
    if not stored.has(MODEL_FILE):
        raise FileNotFoundError(f"{stored.path / MODEL_FILE}: missing")
    live = _unwrap(model).state_dict()  # detached views of the parameters' memory
    keys = stored.keys(MODEL_FILE)
    _check_names(stored.path / MODEL_FILE, keys, live)
    with torch.no_grad():
        for name, key in keys.items():
            stored.fill(live[name], MODEL_FILE, key)
            if key.endswith(packing.VALUES):
                stored.filled_through_mask.add(name)


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


def _check_names(file: Path, stored: dict[str, str], live: dict[str, torch.Tensor]) -> None:
    """What `load_state_dict(strict=True)` checks: no missing or unexpected name (the shapes
    are checked as each tensor is decoded or copied)."""
    missing, unexpected = sorted(live.keys() - stored.keys()), sorted(stored.keys() - live)
    if missing or unexpected:
        raise RuntimeError(f"{file}: missing keys {missing}, unexpected keys {unexpected}")


def load_masks(path: Path) -> dict[str, torch.Tensor]:
    """The bool masks (True = active) of checkpoint `path`; {} for a dense model."""
    masks = read_tensors(path, (MASKS_FILE,)).get(MASKS_FILE, {})
    return {k: v.bool() for k, v in masks.items()}


def checkpoint_bytes(path: Path) -> int:
    """What checkpoint directory `path` takes on disk: the sizes of its files."""
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"{STEP_PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete periodic checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _step_of(p.name) is not None]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX) :]))


def _step_of(name: str) -> int | None:
    """The step of a checkpoint folder's name; None for anything else (a set-aside `.bad-`)."""
    digits = name[len(STEP_PREFIX) :]
    return int(digits) if name.startswith(STEP_PREFIX) and digits.isdigit() else None


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint to `<name>.bad-<n>` (the first free n): kept to be looked
    at, never listed, resumed from or pruned again."""
    n = 1
    while (bad := path.with_name(f"{path.name}.bad-{n}")).exists():
        n += 1
    path.rename(bad)
    return bad


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` periodic checkpoints (and stale temp folders)."""
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in Path(root).glob(".tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
