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

This module writes and reads checkpoints (atomic writes, digests, loaders); the file names and
the step folders are `checkpoint_layout`, decoding the stored tensors `checkpoint_decode`. What a
pre-training run puts in a checkpoint, part by part, is `mediswift.train.state`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import save_file

from mediswift.artifacts import file_digest
from mediswift.model.gpt import GPT, GPTConfig
from mediswift.train import packing
from mediswift.train.checkpoint_decode import Stored
from mediswift.train.checkpoint_layout import (
    CONFIG_FILE,
    DIGESTS_FILE,
    FORMAT,
    MASKS_FILE,
    MODEL_FILE,
    READABLE_FORMATS,
    STEP_PREFIX,
    TENSOR_FILES,
    TRAIN_JSON_FILE,
    TRAIN_TENSORS_FILE,
    DamagedCheckpoint,
    checkpoint_bytes,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    read_config,
    read_json,
    read_train_json,
    set_aside,
    step_dir,
)

# The public names: this module's own, and the layout's and decoding's (`checkpoint_layout`,
# `checkpoint_decode`), so callers keep one import for checkpoints.
__all__ = [
    "checkpoint_bytes",
    "CONFIG_FILE",
    "DamagedCheckpoint",
    "DIGESTS_FILE",
    "fill_model",
    "fill_weights",
    "FORMAT",
    "latest_checkpoint",
    "list_checkpoints",
    "load_masks",
    "load_model",
    "load_weights",
    "MASKS_FILE",
    "MODEL_FILE",
    "model_state",
    "optimizer_tensors",
    "prune_checkpoints",
    "read_checkpoint",
    "read_config",
    "read_tensors",
    "read_train_json",
    "read_weights",
    "READABLE_FORMATS",
    "restore_optimizer",
    "restore_weights",
    "save_checkpoint",
    "set_aside",
    "step_dir",
    "STEP_PREFIX",
    "Stored",
    "TENSOR_FILES",
    "TRAIN_JSON_FILE",
    "TRAIN_TENSORS_FILE",
    "verify",
    "write_checkpoint",
]


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
    for name, want in read_json(listed).items():
        f = path / name
        if not f.is_file():
            raise DamagedCheckpoint(f, "missing")
        if f.stat().st_size != want["bytes"]:
            raise DamagedCheckpoint(f, f"{f.stat().st_size} bytes, {want['bytes']} written")
        if file_digest(f) != want["sha256"]:
            raise DamagedCheckpoint(f, "sha256 differs from the one written")


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


def read_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """(safetensors file name -> tensors on CPU, whole, train_state.json or {}) of checkpoint
    `path`, after checking its digests and format (a damaged checkpoint raises
    `DamagedCheckpoint`). Resuming reads it as `Stored` instead, decoding into the run."""
    path = Path(path)
    verify(path)
    return read_tensors(path), read_train_json(path)


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
