"""Sparse checkpoints (format 2): masked tensors as kept values + packed bits, loaded back bit
for bit; a 75% sparse tiny variant's checkpoints are much smaller than the dense one's, as the
dry run's formula says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from training_fixtures import tiny_pretrain_config, tiny_variant

from mediswift.checkpoint_size import checkpoint_bytes, gpt_params
from mediswift.model import GPT, model_config
from mediswift.model.sizes import size as model_size
from mediswift.sparsity import MaskedParams, make_masks
from mediswift.train import checkpoint as ckpt
from mediswift.train import packing
from mediswift.train.pretrain import run_variant

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(bits(a), bits(b))


def round_trip(tmp: Path, tensors: dict, masks: dict) -> tuple[dict, dict]:
    """Encode, write and read back as a checkpoint does: (what the file holds, decoded)."""
    save_file(packing.encode(tensors, masks), str(tmp / "t.safetensors"))
    save_file(packing.pack_masks(masks), str(tmp / "m.safetensors"))
    stored = load_file(str(tmp / "t.safetensors"))
    back = packing.unpack_masks(load_file(str(tmp / "m.safetensors")))
    assert all(torch.equal(back[n], m) for n, m in masks.items())
    return stored, packing.decode(stored, back)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_masked_tensors_come_back_bit_for_bit(tmp_path: Path, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    m = torch.rand(13, 7, generator=g) < 0.3  # an odd size: the last byte of bits is partial
    w = torch.randn(13, 7, generator=g).to(dtype)
    w = w * m.to(dtype)  # masking by multiplication: negative weights become -0.0
    assert torch.signbit(w[~m]).any()
    moment = torch.rand(13, 7, generator=g).to(dtype) * m.to(dtype)  # +0.0 outside
    tensors = {
        "h.0.w": w,
        "optim.h.0.w.exp_avg_sq": moment,
        "optim.h.0.w.step": torch.tensor(3.0),  # AdamW's scalar: never sparse
        "wte": torch.randn(4, 3, generator=g).to(dtype),  # a dense layer: stored as it is
    }
    stored, back = round_trip(tmp_path, tensors, {"h.0.w": m})
    assert set(stored) == {
        "h.0.w.values",
        "h.0.w.neg_zero_bits",
        "optim.h.0.w.exp_avg_sq.values",
        "optim.h.0.w.step",
        "wte",
    }
    assert stored["h.0.w.values"].numel() == int(m.sum())
    assert set(back) == set(tensors)
    for key, t in tensors.items():
        assert same_bits(back[key], t), key


def test_a_tensor_not_zero_outside_its_mask_stays_dense(tmp_path: Path) -> None:
    """A weight the mask does not (yet) cover, e.g. just after a mask moved, or a NaN: stored
    whole under its own key, so loading still gives its exact bits."""
    m = torch.tensor([[True, False], [False, True]])
    revived = torch.tensor([[1.0, 2.0], [0.0, -3.0]])
    nan = torch.tensor([[1.0, float("nan")], [-0.0, 4.0]])
    tensors = {"a": revived, "optim.a.exp_avg": nan}
    stored, back = round_trip(tmp_path, tensors, {"a": m})
    assert set(stored) == {"a", "optim.a.exp_avg"}
    assert same_bits(back["a"], revived) and same_bits(back["optim.a.exp_avg"], nan)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir())


def test_sparse_tiny_checkpoints_are_smaller_as_the_formula_says(tmp_path: Path) -> None:
    cfg = tiny_pretrain_config(steps=2, checkpoint_every=2, eval_every=2, keep_checkpoints=1)
    spec = tiny_variant(tmp_path, cfg)
    rec = {
        s: run_variant(spec.model_copy(update={"sparsity": s, "out_dir": str(tmp_path / str(s))}))
        for s in (0.0, 0.75)
    }
    for r in rec.values():  # the record's sizes are the directories' own
        out = Path(r["checkpoint"]).parent
        assert r["checkpoint_bytes"] == dir_bytes(out / "final")
        assert r["resume_checkpoint_bytes"] == dir_bytes(out / "checkpoints" / "step_00000002")
    size = model_size("tiny")
    params = gpt_params(size.n_layer, size.d_model, vocab=64, block=cfg.block_size)
    for key, moments in (("checkpoint_bytes", False), ("resume_checkpoint_bytes", True)):
        dense, sparse = rec[0.0][key], rec[0.75][key]
        sparsified = params.sparse * 4 * (3 if moments else 1)  # what they weigh dense (fp32)
        assert dense - sparse >= sparsified / 2, key
        for s, actual in ((0.0, dense), (0.75, sparse)):  # the dry run's formula (+ headers)
            assert checkpoint_bytes(params, s, moments) == pytest.approx(actual, rel=0.03), key


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("shape", [(1,), (3, 5), (7, 9, 11)])  # numel not a multiple of 8
def test_round_trip_is_bit_identical_at_any_sparsity(
    tmp_path: Path, sparsity: float, shape: tuple[int, ...]
) -> None:
    g = torch.Generator().manual_seed(len(shape))
    m = torch.rand(shape, generator=g) >= sparsity
    w = torch.randn(shape, generator=g) * m  # -0.0 where a negative weight was pruned
    tensors = {"w": w, "optim.w.exp_avg": torch.rand(shape, generator=g) * m}
    _, back = round_trip(tmp_path, tensors, {"w": m})
    for key, t in tensors.items():
        assert same_bits(back[key], t), key


def masked_tiny_model(sparsity: float) -> tuple[GPT, dict[str, torch.Tensor]]:
    """A tiny GPT masked by multiplication, as training leaves it (-0.0 where it pruned)."""
    torch.manual_seed(0)
    model = GPT(model_config("tiny", 64, 32))
    masks = make_masks(model, sparsity, seed=0)
    MaskedParams(model, masks).apply_to_weights()
    return model, masks


def same_model(a: GPT, b: GPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(same_bits(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("sparsity", [0.0, 0.75])
def test_load_model_decodes_into_the_parameters_bit_for_bit(
    tmp_path: Path, sparsity: float
) -> None:
    model, masks = masked_tiny_model(sparsity)
    assert sparsity == 0 or any(torch.signbit(p[p == 0]).any() for p in model.parameters())
    ckpt.save_checkpoint(tmp_path / "c", model, masks if sparsity else None)
    loaded = ckpt.load_model(tmp_path / "c")
    assert same_model(loaded, model)
    whole = ckpt.read_weights(tmp_path / "c")  # the other reader gives the same bits
    assert all(same_bits(whole[k], t) for k, t in loaded.state_dict().items())
    assert loaded.wte.weight.requires_grad and loaded.training  # a model as `GPT` builds it


def test_load_model_still_reads_format_1(tmp_path: Path) -> None:
    model, masks = masked_tiny_model(0.75)
    path = tmp_path / "f1"
    path.mkdir()
    (path / ckpt.CONFIG_FILE).write_text(json.dumps({"format": 1, "model": model.config.to_dict()}))
    save_file(ckpt.model_state(model), str(path / ckpt.MODEL_FILE))
    save_file(masks, str(path / ckpt.MASKS_FILE))  # format 1: bool masks, whole tensors
    assert same_model(ckpt.load_model(path), model)
    assert all(torch.equal(ckpt.load_masks(path)[n], m) for n, m in masks.items())


def test_load_model_is_strict(tmp_path: Path) -> None:
    """A missing or a misshapen weight is refused, as `load_state_dict(strict=True)` does."""
    model, masks = masked_tiny_model(0.75)
    weights = ckpt.model_state(model)
    missing = {k: v for k, v in weights.items() if k != "ln_f.weight"}
    ckpt.write_checkpoint(tmp_path / "m", model.config, {ckpt.MODEL_FILE: missing})
    with pytest.raises(RuntimeError, match="ln_f.weight"):
        ckpt.load_model(tmp_path / "m")
    misshapen = {**weights, "ln_f.weight": torch.ones(1)}  # copy_ would broadcast it
    ckpt.write_checkpoint(tmp_path / "s", model.config, {ckpt.MODEL_FILE: misshapen})
    with pytest.raises(RuntimeError, match="shape"):
        ckpt.load_model(tmp_path / "s")


def test_decode_into_refuses_a_tensor_of_another_shape_or_dtype() -> None:
    m = torch.tensor([True, False, True, False])
    stored = packing.encode({"w": torch.tensor([1.0, -0.0, 2.0, 0.0])}, {"w": m})
    for dest in (torch.empty(5), torch.empty(4, dtype=torch.float64)):
        with pytest.raises(ValueError, match="cannot decode"):
            packing.decode_into(dest, "w.values", stored, {"w": m})
    dest = torch.full((4,), 7.0)  # whatever it held before is overwritten
    packing.decode_into(dest, "w.values", stored, {"w": m})
    assert same_bits(dest, torch.tensor([1.0, -0.0, 2.0, 0.0]))


@pytest.mark.parametrize("chunk", [8, 16, 1 << 16])
@pytest.mark.parametrize("packed", [False, True])
def test_decoding_by_chunks_is_bit_identical(
    monkeypatch: pytest.MonkeyPatch, chunk: int, packed: bool
) -> None:
    """Chunks that split the kept values and the sign bits anywhere (a sign byte spanning two
    chunks), from bool masks and from the packed bits as stored."""
    monkeypatch.setattr(packing, "CHUNK", chunk)
    g = torch.Generator().manual_seed(chunk)
    m = torch.rand(37, 29, generator=g) < 0.3
    tensors = {"w": torch.randn(37, 29, generator=g) * m, "optim.w.exp_avg_sq": m * 1.0}
    stored = packing.encode(tensors, {"w": m})
    assert "w.neg_zero_bits" in stored and "optim.w.exp_avg_sq.neg_zero_bits" not in stored
    masks = packing.packed_masks(packing.pack_masks({"w": m})) if packed else {"w": m}
    back = packing.decode(stored, masks)
    for key, t in tensors.items():
        assert same_bits(back[key], t), key


def test_too_few_values_for_the_mask_are_refused() -> None:
    m = torch.tensor([True, True, False])
    stored = packing.encode({"w": torch.tensor([1.0, 2.0, 0.0])}, {"w": m})
    stored["w.values"] = stored["w.values"][:1]
    with pytest.raises(ValueError, match="1 values for 2 active entries"):
        packing.decode(stored, packing.packed_masks(packing.pack_masks({"w": m})))
