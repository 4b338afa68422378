"""Checkpointed state as named parts: save a run's parts, restore them into a freshly built run,
and the two continue bit for bit alike; the on-disk layout is the one the loaders read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_fixtures import TinyRun, same_bits, tiny_run
from safetensors.torch import load_file, save_file

from mediswift.train import checkpoint as ckpt
from mediswift.train.state import Snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(same_bits(x, y) for x, y in pairs)


def build(init_seed: int) -> TinyRun:
    """A small sparse run with dynamic masks and dropout: every part of the state matters."""
    return tiny_run(0.5, init_seed, total_steps=12)


def test_restored_parts_continue_bitwise(tmp_path: Path) -> None:
    ref = build(init_seed=0)  # never interrupted
    ref.fit(6)
    ref.fit(12)

    a = build(init_seed=0)
    a.fit(6)
    path = a.checkpoint.save(ckpt.step_dir(tmp_path, 6))
    # The layout every loader reads: the same files as before the parts existed.
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "digests.json",
        "masks.safetensors",
        "model.safetensors",
        "train_state.json",
        "train_state.safetensors",
    ]
    assert all(torch.equal(ckpt.load_masks(path)[n], m) for n, m in a.masked.bool_masks().items())
    # Saved right after a SET mask update (step 6): masked weights and both moments are stored
    # as kept values, and read back bit for bit.
    stored = load_file(str(path / ckpt.MODEL_FILE)) | load_file(str(path / ckpt.TRAIN_TENSORS_FILE))
    masked_names = a.masked.bool_masks()
    sparse = {k for k in stored if k.endswith(".values")}
    assert len(sparse) == 3 * len(masked_names)  # weight, exp_avg, exp_avg_sq
    files, _ = ckpt.read_checkpoint(path)
    live, _ = ckpt.optimizer_tensors(a.model, a.opt)
    live |= a.model.state_dict()
    read = files[ckpt.MODEL_FILE] | files[ckpt.TRAIN_TENSORS_FILE]
    assert all(same_bits(read[k], t) for k, t in live.items())

    b = build(init_seed=1)  # other weights, masks, generators and data position: all restored
    b.checkpoint.load(path)
    assert b.state.step == 6 and b.state.curve == a.state.curve
    assert same_weights(a.model, b.model)
    assert b.masked.bool_masks().keys() == a.masked.bool_masks().keys()
    assert all(torch.equal(b.masked.bool_masks()[n], m) for n, m in a.masked.bool_masks().items())

    # Dropout (the RNG), data order (the loader), SET (masks, generator) and AdamW line up.
    assert b.fit(12) == [r["train_loss"] for r in ref.state.curve]
    assert same_weights(ref.model, b.model)
    assert ref.masked.bool_masks().keys() == b.masked.bool_masks().keys()
    assert all(torch.equal(b.masked.bool_masks()[n], m) for n, m in ref.masked.bool_masks().items())


def test_final_checkpoint_holds_weights_and_masks_only(tmp_path: Path) -> None:
    a = build(init_seed=0)
    a.fit(2)
    path = a.checkpoint.save(tmp_path / "final", only=("model", "masks"))
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "digests.json",
        "masks.safetensors",
        "model.safetensors",
    ]
    loaded = ckpt.load_model(path)
    assert same_weights(a.model, loaded)
    with pytest.raises(FileNotFoundError, match="no train state"):
        build(init_seed=0).checkpoint.load(path)


def test_a_format_1_checkpoint_still_resumes(tmp_path: Path) -> None:
    """A checkpoint as format 1 wrote it (every tensor dense, masks as bool, written here with
    that layout) resumes bit for bit like today's."""
    ref = build(init_seed=0)
    ref.fit(6)  # the same schedule as the run it resumes (fit's steps set the schedule)
    ref.fit(12)
    a = build(init_seed=0)
    a.fit(6)
    snap = Snapshot()
    for name, part in a.checkpoint.parts.items():
        snap.merge(part.state_dict(), name)
    old = tmp_path / "step_00000006"
    old.mkdir()
    (old / ckpt.CONFIG_FILE).write_text(
        json.dumps({"format": 1, "model": a.model.config.to_dict()})
    )
    for file, tensors in snap.files.items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(old / file))
    (old / ckpt.TRAIN_JSON_FILE).write_text(json.dumps(snap.json))
    assert load_file(str(old / ckpt.MASKS_FILE))["h.0.attn.q.weight"].dtype == torch.bool

    assert same_weights(ckpt.load_model(old), a.model)
    b = build(init_seed=1)
    b.checkpoint.load(old)
    assert b.fit(12) == [r["train_loss"] for r in ref.state.curve]
    assert same_weights(ref.model, b.model)


def test_parts_may_not_overwrite_each_other() -> None:
    snap = Snapshot({ckpt.TRAIN_TENSORS_FILE: {"x": torch.zeros(1)}}, {"step": 1})
    with pytest.raises(ValueError, match="rewrites"):
        snap.merge(Snapshot({ckpt.TRAIN_TENSORS_FILE: {"x": torch.ones(1)}}), "other")
    with pytest.raises(ValueError, match="rewrites"):
        snap.merge(Snapshot(json={"step": 2}), "other")
