"""2:4 semi-structured sparsity (`pretrain.sparsity_method: semi24`): every group of 4
consecutive weights along the input dimension keeps exactly 2, through training (weights and
AdamW moments), in a variant's checkpoints, and only at 50%. The CUDA forward swap is checked on
CPU with a dense stand-in for the compressed weight (its autograd math and its cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
from pydantic import ValidationError
from training_fixtures import tiny_pretrain_config, tiny_variant

from mediswift.config import PretrainConfig
from mediswift.model import GPT, GPTConfig
from mediswift.sparsity import MaskedParams, is_semi24, make_masks, semi24_mask, use_semi24_kernels
from mediswift.sparsity.semi24 import Semi24Kernels, _semi24_forward
from mediswift.train import checkpoint as ckpt
from mediswift.train.distributed import Dist
from mediswift.train.loop import LoopConfig, train
from mediswift.train.optim import optimizer_for
from mediswift.train.pretrain import run_variant
from mediswift.train.synthetic import SyntheticTokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=64, block_size=32))


def groups_of_four(t: torch.Tensor) -> torch.Tensor:
    """(rows * in/4, 4): the groups along the input (last) dimension, spelled out."""
    rows, cols = t.shape
    return t.reshape(rows, cols // 4, 4).reshape(-1, 4)


def test_every_group_of_four_keeps_two_and_masks_follow_the_seed() -> None:
    model = tiny()
    masks = make_masks(model, 0.5, seed=1, pattern=semi24_mask)
    assert sorted(masks) == sorted(model.matrix_names())
    for m in masks.values():
        assert (groups_of_four(m).sum(dim=1) == 2).all()
        assert is_semi24(m)
    again = make_masks(tiny(), 0.5, seed=1, pattern=semi24_mask)
    other = make_masks(tiny(), 0.5, seed=2, pattern=semi24_mask)
    assert all(torch.equal(masks[n], again[n]) for n in masks)
    assert not all(torch.equal(masks[n], other[n]) for n in masks)
    # The check can fail: an unstructured 50% mask is not 2:4.
    assert not all(is_semi24(m) for m in make_masks(model, 0.5, seed=1).values())


def test_weights_and_moments_keep_the_pattern_through_training() -> None:
    model = tiny()
    masks = make_masks(model, 0.5, seed=0, pattern=semi24_mask)
    masked = MaskedParams(model, masks)
    masked.apply_to_weights()
    opt = optimizer_for(model, PretrainConfig(lr=3e-3, weight_decay=0.1))
    cfg = LoopConfig.from_settings(PretrainConfig(steps=30, lr=3e-3, log_every=1000))
    train(model, opt, iter(SyntheticTokens(64, 16, 4, seed=0)), cfg, Dist(), masked=masked)
    for name, p in model.named_parameters():
        if name not in masks:
            continue
        state = opt.state[p]
        for t in (p.detach(), state["exp_avg"], state["exp_avg_sq"]):
            assert ((groups_of_four(t) != 0).sum(dim=1) <= 2).all(), name
            assert torch.all(t[~masks[name]] == 0), name
        assert torch.all(p[masks[name]] != 0), name  # the kept weights did train


def test_a_semi24_variant_trains_with_exact_masks(tmp_path: Path) -> None:
    cfg = tiny_pretrain_config(sparsity_method="semi24", sparsity_levels=[0.0, 0.5])
    record = run_variant(tiny_variant(tmp_path / "v", cfg, name="tiny-s50-semi24"))
    weights = ckpt.load_model(record["checkpoint"]).state_dict()
    masks = ckpt.load_masks(record["checkpoint"])
    assert len(masks) == 6 * 2
    for name, m in masks.items():
        assert (groups_of_four(m).sum(dim=1) == 2).all(), name
        assert torch.all(weights[name][~m] == 0), name


@pytest.mark.parametrize("levels", [[0.0, 0.75], [0.25]])
def test_semi24_has_one_level(levels: list[float]) -> None:
    with pytest.raises(ValidationError, match="semi24 keeps 2 of every 4"):
        PretrainConfig(sparsity_method="semi24", sparsity_levels=levels)
    PretrainConfig(sparsity_method="semi24", sparsity_levels=[0.0, 0.5])


def test_the_kernel_swap_computes_a_linear_layer_and_compresses_once_per_step() -> None:
    torch.manual_seed(0)
    layer, ref = nn.Linear(16, 8), nn.Linear(16, 8)
    mask = semi24_mask((8, 16), torch.Generator().manual_seed(0))
    with torch.no_grad():
        layer.weight.mul_(mask)
        ref.load_state_dict(layer.state_dict())
    compressions = []

    def dense_stand_in(w: torch.Tensor) -> torch.Tensor:
        compressions.append(w)
        return w.clone()

    kernels = Semi24Kernels()
    layer.forward = _semi24_forward(layer, dense_stand_in, kernels)  # type: ignore[method-assign]
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1, fused=True)  # steps without a version bump
    kernels.attach(opt)
    x = torch.randn(2, 3, 16)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = layer(xa), ref(xb)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad)
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad)
    torch.testing.assert_close(layer.bias.grad, ref.bias.grad)
    layer(x)  # a second micro-batch of the same step reuses the compressed weight
    assert len(compressions) == 1
    version = layer.weight._version
    opt.step()  # fused AdamW changes the weight, not its version counter: the step hook counts
    assert layer.weight._version == version and not torch.equal(layer.weight, ref.weight)
    layer(x)
    assert len(compressions) == 2
    torch.testing.assert_close(compressions[-1], layer.weight.detach())
    with torch.no_grad():
        layer.weight.mul_(0.5)  # a load (copy_, mul_) moves the version
    layer(x)
    assert len(compressions) == 3


def test_no_kernel_swap_off_cuda() -> None:
    model = tiny()
    kernels = use_semi24_kernels(model, make_masks(model, 0.5, seed=0, pattern=semi24_mask))
    assert kernels.swapped == 0 and "CUDA" in kernels.why
