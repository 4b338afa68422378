"""Resuming decodes a checkpoint straight into the built run (`Stored`: weights into the
parameters, masks from their bits, each moment once); the state it restores is the one the
whole-tensor path (`read_checkpoint`, every part from whole tensors) restores, bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_fixtures import D, TinyRun, same_bits, tiny_run

from mediswift.train import checkpoint as ckpt
from mediswift.train.state import ModelState, Snapshot

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def build(sparsity: float, init_seed: int, sharded: bool = False) -> TinyRun:
    return tiny_run(sparsity, init_seed, total_steps=6, sharded=sharded)


def trained_checkpoint(tmp: Path, sparsity: float) -> Path:
    run = build(sparsity, init_seed=0)
    run.fit(4)
    if run.masked:  # one weight not zero outside its mask (a mask just moved): stored whole
        w, m = run.masked.params[0], run.masked.masks[0]
        with torch.no_grad():
            w.view(-1)[int(torch.nonzero(m.view(-1) == 0)[0])] = 0.5
    return run.checkpoint.save(ckpt.step_dir(tmp, 4))


def resumed_whole(path: Path) -> tuple[TinyRun, torch.Tensor]:
    """A run restored by the whole-tensor path (every file decoded whole, then each part
    copies from it: how resuming read a checkpoint before), and the RNG state it left."""
    run = build(_sparsity(path), init_seed=1)
    files, train_json = ckpt.read_checkpoint(path)
    snap = Snapshot(files, train_json)
    for part in run.checkpoint.parts.values():
        part.load_state_dict(snap)
    return run, torch.get_rng_state()


def resumed_decoding(path: Path, sharded: bool) -> tuple[TinyRun, torch.Tensor]:
    run = build(_sparsity(path), init_seed=1, sharded=sharded)
    run.checkpoint.load(path)
    return run, torch.get_rng_state()


def _sparsity(path: Path) -> float:
    return 0.75 if ckpt.load_masks(path) else 0.0


def optimizer_by_name(run: TinyRun) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Every AdamW tensor by `<param name>.<key>`, and the groups with their parameters'
    names."""
    names = {id(p): n for n, p in run.model.named_parameters()}
    tensors = {f"{names[id(p)]}.{k}": v for p, st in run.opt.state.items() for k, v in st.items()}
    groups = [
        {k: v for k, v in g.items() if k != "params"}
        | {"names": [names[id(p)] for p in g["params"]]}
        for g in run.opt.param_groups
    ]
    return tensors, groups


@pytest.mark.parametrize("sharded", [False, True], ids=["whole", "sharded-path"])
@pytest.mark.parametrize("sparsity", [0.75, 0.0])
def test_decoding_into_the_run_restores_what_whole_tensors_do(
    tmp_path: Path, sparsity: float, sharded: bool
) -> None:
    path = trained_checkpoint(tmp_path, sparsity)
    assert ckpt.read_checkpoint(path)[0].get(ckpt.MASKS_FILE, {}).keys() == (
        build(sparsity, 0).masked.bool_masks().keys()
    )
    old, old_rng = resumed_whole(path)
    new, new_rng = resumed_decoding(path, sharded)

    params = dict(new.model.state_dict())
    assert params.keys() == old.model.state_dict().keys()
    assert all(same_bits(t, old.model.state_dict()[n]) for n, t in params.items())
    assert bool(new.masked) == bool(sparsity) and new.masked.names == old.masked.names
    assert all(same_bits(a, b) for a, b in zip(new.masked.masks, old.masked.masks, strict=True))
    (new_opt, new_groups), (old_opt, old_groups) = optimizer_by_name(new), optimizer_by_name(old)
    assert new_opt.keys() == old_opt.keys() and new_groups == old_groups
    assert {k.rsplit(".", 1)[1] for k in new_opt} == {"exp_avg", "exp_avg_sq", "step"}
    assert all(same_bits(t, old_opt[k]) for k, t in new_opt.items())
    assert torch.equal(new_rng, old_rng)
    assert new.loader.state_dict() == old.loader.state_dict()
    assert new.state.to_json() == old.state.to_json()
    if sparsity:
        new_dyn, old_dyn = new.dynamic.state_dict(), old.dynamic.state_dict()
        assert all(torch.equal(t, old_dyn[k]) for k, t in new_dyn.items())


def test_sparse_weights_are_decoded_in_place_and_moments_once(tmp_path: Path) -> None:
    path = trained_checkpoint(tmp_path, 0.75)
    run = build(0.75, init_seed=1)
    before = {n: p.data_ptr() for n, p in run.model.named_parameters()}
    stored = ckpt.Stored(path)
    ModelState(run.model, D, sharded=False).load_state_dict(Snapshot(stored=stored))
    assert {n: p.data_ptr() for n, p in run.model.named_parameters()} == before
    # every masked weight but the one stored whole (see `trained_checkpoint`)
    assert stored.filled_through_mask == set(run.masked.names[1:])
    assert ckpt.TRAIN_TENSORS_FILE not in stored.decoded  # nothing decoded whole yet
    assert any(k.endswith(".exp_avg_sq.values") for k in stored.raw[ckpt.TRAIN_TENSORS_FILE])
    moments = stored.tensors(ckpt.TRAIN_TENSORS_FILE)
    key = f"optim.{run.masked.names[1]}.exp_avg"
    assert moments[key] is moments[key]  # decoded once, kept


def test_a_damaged_checkpoint_is_refused_naming_its_file(tmp_path: Path) -> None:
    path = trained_checkpoint(tmp_path, 0.75)
    f = path / ckpt.TRAIN_TENSORS_FILE
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ckpt.DamagedCheckpoint, match=ckpt.TRAIN_TENSORS_FILE) as e:
        build(0.75, init_seed=1).checkpoint.load(path)
    assert e.value.file == f


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_masks_fill_any_dtype_as_a_bool_copy_does(tmp_path: Path, dtype: torch.dtype) -> None:
    """From the bits a chunk at a time where numpy can write the tensor, whole where it cannot
    (bfloat16, a transposed view): 1 active, 0 pruned either way."""
    stored = ckpt.Stored(trained_checkpoint(tmp_path, 0.75))
    masks = stored.bool_masks()
    for name in stored.mask_names():
        want = torch.empty(masks[name].shape, dtype=dtype).copy_(masks[name])
        dest = torch.full_like(want, 7.0)
        stored.fill_mask(dest, name)
        assert same_bits(dest, want)
        dest_t = torch.full_like(want.t(), 7.0).t()  # not contiguous
        stored.fill_mask(dest_t, name)
        assert torch.equal(dest_t, want)
