"""A resumable pre-training checkpoint as named parts, each with its save and load side by side.

A part's `state_dict()` returns its share of the checkpoint as it lies on disk (a `Snapshot`:
tensors by safetensors file, entries of train_state.json; see `mediswift.train.checkpoint` for
the layout), and its `load_state_dict(snapshot)` takes that share back from the whole checkpoint.
`TrainCheckpoint` is the one place that iterates the parts, to save and to resume.

Parts are restored into objects that are already built (the model wrapped, the optimizer made),
so resuming runs the same construction code as a fresh start. Every rank calls `state_dict()`
on the parts in the same order, since a part may gather across ranks (loader positions, RNG
states, FSDP shards); rank 0 alone writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn

from mediswift.model.gpt import GPTConfig
from mediswift.sparsity import DynamicSparsity, MaskedParams
from mediswift.train import checkpoint as ckpt
from mediswift.train.distributed import Dist, gather_objects
from mediswift.train.loop import TrainState


@dataclass
class Snapshot:
    """Checkpoint contents: safetensors file name -> tensors, and train_state.json entries.

    Saving fills `files`; resuming gives `stored` instead (the files as they lie on disk), so a
    part can decode its tensors straight into the run, and `tensors` decodes on demand."""

    files: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)
    stored: ckpt.Stored | None = None

    def tensors(self, file: str) -> Mapping[str, torch.Tensor]:
        if self.stored is not None and file not in self.files:
            return self.stored.tensors(file)
        return self.files.get(file, {})

    def merge(self, other: Snapshot, part: str) -> None:
        """Add a part's share; two parts writing the same name is a bug, not a merge."""
        for file, tensors in other.files.items():
            mine = self.files.setdefault(file, {})
            if clash := mine.keys() & tensors.keys():
                raise ValueError(f"part {part!r} rewrites {file} tensors {sorted(clash)[:3]}")
            mine.update(tensors)
        if clash := self.json.keys() & other.json.keys():
            raise ValueError(f"part {part!r} rewrites train state entries {sorted(clash)}")
        self.json.update(other.json)


class Stateful(Protocol):
    def state_dict(self) -> Snapshot: ...

    def load_state_dict(self, snap: Snapshot) -> None: ...


class ModelState:
    """The weights (model.safetensors: what fine-tuning loads)."""

    def __init__(self, model: nn.Module, d: Dist, sharded: bool):
        self.model, self.d, self.sharded = model, d, sharded

    def state_dict(self) -> Snapshot:
        if not (self.sharded or self.d.is_main):  # under FSDP every rank gathers the shards
            return Snapshot()
        return Snapshot({ckpt.MODEL_FILE: ckpt.model_state(self.model)})

    def load_state_dict(self, snap: Snapshot) -> None:
        if snap.stored is not None and not self.sharded:  # decoded straight into the weights
            ckpt.restore_weights(self.model, snap.stored)
        else:
            ckpt.load_weights(self.model, snap.tensors(ckpt.MODEL_FILE))


class MaskState:
    """The sparsity masks (masks.safetensors; none for a dense model)."""

    def __init__(self, masked: MaskedParams, d: Dist):
        self.masked, self.d = masked, d

    def state_dict(self) -> Snapshot:
        if not (self.masked and self.d.is_main):
            return Snapshot()
        return Snapshot({ckpt.MASKS_FILE: self.masked.bool_masks()})

    def load_state_dict(self, snap: Snapshot) -> None:
        if snap.stored is not None and not self.masked.sharded:
            self._fill(snap.stored)
            return
        saved = {k: v.bool() for k, v in snap.tensors(ckpt.MASKS_FILE).items()}
        if not saved:  # a checkpoint without masks keeps the ones the seed drew
            return
        if sorted(saved) != self.masked.names:
            raise ValueError("checkpoint masks do not cover the model's sparse matrices")
        if self.masked.sharded:  # FSDP runs static masks only: they must be the seed's
            live = self.masked.bool_masks()
            if not all(torch.equal(saved[n], live[n]) for n in saved):
                raise ValueError("checkpoint masks differ from this run's static masks")
            return
        for i, name in enumerate(self.masked.names):
            self.masked.set_mask(i, saved[name])  # dynamic sparsity moved them
        self.masked.apply_to_weights()

    def _fill(self, stored: ckpt.Stored) -> None:
        """The masks decoded from their bits straight into the run's (dynamic sparsity moved
        them), then the weights masked, as `load_state_dict` does from whole masks."""
        names = stored.mask_names()
        if not names:  # a checkpoint without masks keeps the ones the seed drew
            return
        if names != self.masked.names:
            raise ValueError("checkpoint masks do not cover the model's sparse matrices")
        for name, mask in zip(names, self.masked.masks, strict=True):
            stored.fill_mask(mask, name)
        # A weight just decoded from its kept values is +-0 outside its mask already: masking
        # it again (x * 1, +-0 * 0) changes no bit, so only the others are multiplied.
        todo = [i for i, n in enumerate(names) if n not in stored.filled_through_mask]
        self.masked.apply_to_weights(todo)


class OptimizerState:
    """AdamW moments and steps by parameter name, and the groups' hyperparameters."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist, sharded: bool):
        self.model, self.optimizer, self.d, self.sharded = model, optimizer, d, sharded

    def state_dict(self) -> Snapshot:
        if not (self.sharded or self.d.is_main):  # under FSDP every rank gathers the moments
            return Snapshot()
        tensors, groups = ckpt.optimizer_tensors(self.model, self.optimizer)
        return Snapshot({ckpt.TRAIN_TENSORS_FILE: tensors}, {"optimizer_groups": groups})

    def load_state_dict(self, snap: Snapshot) -> None:
        ckpt.restore_optimizer(
            self.model,
            self.optimizer,
            snap.tensors(ckpt.TRAIN_TENSORS_FILE),
            snap.json["optimizer_groups"],
        )


class LoaderState:
    """Every rank's position in its stream of training batches; a run resumed on another number
    of ranks takes the same global position (`reshard_positions`)."""

    def __init__(self, loader: Any, d: Dist):
        self.loader, self.d = loader, d

    def state_dict(self) -> Snapshot:
        return Snapshot(json={"loader": gather_objects(self.loader.state_dict(), self.d)})

    def load_state_dict(self, snap: Snapshot) -> None:
        saved = snap.json["loader"]
        if len(saved) != self.d.world_size:
            saved = reshard_positions(saved, self.d.world_size)
        self.loader.load_state_dict(saved[self.d.rank])


# The rows a rank has read: `TokenBatches` (in its epoch) and `SyntheticTokens` name it so.
POSITION_KEYS = ("consumed", "position")


def reshard_positions(states: list[dict[str, Any]], world: int) -> list[dict[str, Any]]:
    """The loader positions of `world` ranks that continue where `states` (saved by another
    number of ranks) stopped.

    Both loaders deal one global row sequence round-robin (rank r of W reads rows r, r + W,
    ...), and every rank reads the same number of rows per step, so W ranks at local position
    p have read exactly the global rows before p * W; `world` ranks resume at p * W / world.
    A step is a contiguous run of global rows either way, so the steps after the resume see
    the same rows as with the old ranks (up to an epoch end: an epoch is cut to a whole number
    of rows per rank, which depends on the number of ranks).
    """
    key = next((k for k in POSITION_KEYS if k in states[0]), None)
    if key is None:
        raise ValueError(f"cannot move a loader position {sorted(states[0])} to {world} ranks")

    def rest(s: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in s.items() if k not in (key, "rank")}

    if any(s[key] != states[0][key] or rest(s) != rest(states[0]) for s in states):
        raise ValueError("the saved ranks stopped at different positions: cannot reshard")
    rows = states[0][key] * len(states)
    if rows % world:
        raise ValueError(f"{rows} rows read cannot be split evenly over {world} ranks")
    base = {**states[0], key: rows // world}
    if "world_size" in base:
        base["world_size"] = world
    return [{**base, "rank": r} if "rank" in base else dict(base) for r in range(world)]


class RNGState:
    """Every rank's torch RNG (dropout draws from it), and its CUDA RNG on GPUs."""

    def __init__(self, d: Dist):
        self.d = d
        self.cuda = d.device.type == "cuda"

    def state_dict(self) -> Snapshot:
        rngs = gather_objects(torch.get_rng_state(), self.d)
        cuda = gather_objects(torch.cuda.get_rng_state(self.d.device), self.d) if self.cuda else []
        tensors = {f"rng.torch.{r}": t for r, t in enumerate(rngs)}
        tensors |= {f"rng.cuda.{r}": t for r, t in enumerate(cuda)}
        return Snapshot({ckpt.TRAIN_TENSORS_FILE: tensors})  # type: ignore[dict-item]

    def load_state_dict(self, snap: Snapshot) -> None:
        tensors, rank = snap.tensors(ckpt.TRAIN_TENSORS_FILE), self.d.rank
        if f"rng.torch.{rank}" not in tensors:  # more ranks than saved: a new, distinct stream
            torch.manual_seed(_derived_seed(tensors["rng.torch.0"], rank))
            return
        torch.set_rng_state(tensors[f"rng.torch.{rank}"])
        if self.cuda and f"rng.cuda.{rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"], self.d.device)


def _derived_seed(state: torch.Tensor, rank: int) -> int:
    """A seed for a rank the checkpoint has no RNG state of: a function of rank 0's saved state
    and the rank, so a resume is repeatable and no two ranks draw the same dropout."""
    digest = hashlib.sha256(state.numpy().tobytes() + rank.to_bytes(8, "little")).digest()
    return int.from_bytes(digest[:8], "little")


class DynamicSparsityState:
    """The SET/RigL schedule's own generator (its masks are the masks part)."""

    PREFIX = "dynamic."

    def __init__(self, dynamic: DynamicSparsity, d: Dist):
        self.dynamic, self.d = dynamic, d

    def state_dict(self) -> Snapshot:
        own = {self.PREFIX + k: v for k, v in self.dynamic.state_dict().items()}
        return Snapshot({ckpt.TRAIN_TENSORS_FILE: own} if self.d.is_main else {})

    def load_state_dict(self, snap: Snapshot) -> None:
        tensors = snap.tensors(ckpt.TRAIN_TENSORS_FILE)  # read its own entries only
        n = len(self.PREFIX)
        self.dynamic.load_state_dict({k[n:]: tensors[k] for k in tensors if k[:n] == self.PREFIX})


class ProgressState:
    """Steps and tokens done and the loss curve so far (the `TrainState` the loop advances)."""

    def __init__(self, state: TrainState):
        self.state = state

    def state_dict(self) -> Snapshot:
        return Snapshot(json=self.state.to_json())

    def load_state_dict(self, snap: Snapshot) -> None:
        saved = TrainState.from_json(snap.json)
        self.state.step, self.state.tokens, self.state.curve = saved.step, saved.tokens, saved.curve


class TrainCheckpoint:
    """The named parts of a run's checkpoint, saved and restored in their order."""

    def __init__(self, config: GPTConfig, d: Dist, parts: dict[str, Stateful]):
        self.config, self.d, self.parts = config, d, parts

    def save(self, path: Path, only: Iterable[str] | None = None) -> Path | None:
        """Every rank calls this; rank 0 writes `path` (returned) from the parts `only` (all)."""
        names = list(self.parts) if only is None else list(only)
        snap = Snapshot()
        for name in names:
            snap.merge(self.parts[name].state_dict(), name)
        if not self.d.is_main:
            return None
        return ckpt.write_checkpoint(path, self.config, snap.files, snap.json or None)

    def load(self, path: Path) -> None:
        """Restore every part from checkpoint `path` (every rank reads it), after checking its
        digests: a damaged checkpoint raises `DamagedCheckpoint` and restores nothing."""
        ckpt.verify(path)
        self.restore(path)

    def restore(self, path: Path) -> None:
        """`load` without the digest check (for a checkpoint already verified)."""
        # Each file read once, mapped: every part decodes its tensors into the run from it.
        stored = ckpt.Stored(path)
        train_json = ckpt.read_train_json(path)
        if not train_json:
            raise FileNotFoundError(f"{path} holds no train state (a weights-only checkpoint)")
        snap = Snapshot(json=train_json, stored=stored)
        for part in self.parts.values():
            part.load_state_dict(snap)
