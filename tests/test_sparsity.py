"""Static masks (exact zeros, only the six matrices, deterministic), masked weights staying zero
through many AdamW steps with weight decay, Table 2 active sizes, and SET/RigL keeping density."""

from __future__ import annotations

import pytest
import torch

from mediswift.config import PretrainConfig
from mediswift.model import GPT, GPTConfig, model_config
from mediswift.sparsity import (
    DynamicSparsity,
    MaskedParams,
    count_active,
    drop_fraction,
    make_masks,
)
from mediswift.train.distributed import Dist
from mediswift.train.loop import LoopConfig, train
from mediswift.train.optim import optimizer_for
from mediswift.train.synthetic import SyntheticTokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=64, block_size=32))


@pytest.mark.parametrize("s", [0.5, 0.75])
def test_exact_number_of_zeros_in_each_matrix(s: float) -> None:
    model = tiny()
    masks = make_masks(model, s, seed=3)
    assert sorted(masks) == sorted(model.matrix_names())
    for m in masks.values():
        assert int((~m).sum()) == round(s * m.numel())


def test_only_the_six_matrices_are_masked_and_dense_has_none() -> None:
    model = tiny()
    masks = make_masks(model, 0.5, seed=0)
    assert not any("wte" in n or "wpe" in n or "ln" in n or n.endswith(".bias") for n in masks)
    assert len(masks) == 6 * model.config.n_layer
    assert make_masks(model, 0.0, seed=0) == {}


def test_masks_depend_on_seed_only() -> None:
    a = make_masks(tiny(), 0.5, seed=1)
    torch.manual_seed(123)  # the global RNG does not matter: masks have their own generator
    b = make_masks(tiny(), 0.5, seed=1)
    c = make_masks(tiny(), 0.5, seed=2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_masked_weights_and_moments_stay_zero_through_training() -> None:
    model = tiny()
    masks = make_masks(model, 0.75, seed=0)
    masked = MaskedParams(model, masks)
    masked.apply_to_weights()
    assert masked.nonzeros_outside_mask() == 0
    opt = optimizer_for(model, PretrainConfig(lr=3e-3, weight_decay=0.1))
    assert opt.param_groups[0]["weight_decay"] == 0.1
    loader = SyntheticTokens(64, 16, 4, seed=0)
    cfg = LoopConfig.from_settings(PretrainConfig(steps=60, lr=3e-3, log_every=1000))
    state = train(model, opt, iter(loader), cfg, Dist(), masked=masked)
    assert state.step == 60
    assert masked.nonzeros_outside_mask() == 0
    for name, p in model.named_parameters():
        if name in masks:
            off = ~masks[name]
            assert torch.all(p[off] == 0), name
            assert torch.all(p[masks[name]] != 0), name  # the active weights did train
            st = opt.state[p]
            assert torch.all(st["exp_avg"][off] == 0) and torch.all(st["exp_avg_sq"][off] == 0)


def test_without_upkeep_masked_weights_would_revive() -> None:
    # The control for the test above: masking only at init is not enough.
    model = tiny()
    masked = MaskedParams(model, make_masks(model, 0.75, seed=0))
    masked.apply_to_weights()
    opt = optimizer_for(model, PretrainConfig(lr=3e-3))
    cfg = LoopConfig.from_settings(PretrainConfig(steps=3, lr=3e-3, log_every=1000))
    train(model, opt, iter(SyntheticTokens(64, 16, 4)), cfg, Dist(), masked=None)
    assert masked.nonzeros_outside_mask() > 0


@pytest.mark.parametrize(
    ("size", "s", "paper"),
    [
        ("med", 0.0, 302e6),
        ("med", 0.5, 151e6),
        ("med", 0.75, 76e6),
        ("large", 0.5, 255e6),
        ("large", 0.75, 128e6),
        ("xl", 0.0, 1.21e9),
        ("xl", 0.5, 605e6),
        ("xl", 0.75, 302e6),
    ],
)
def test_table2_active_sizes(size: str, s: float, paper: float) -> None:
    with torch.device("meta"):
        model = GPT(model_config(size, 42_384))
    # Count from the exact number of zeros per matrix (no need to draw 1e9 random numbers).
    zeros = sum(round(s * model.get_parameter(n).numel()) for n in model.matrix_names())
    counts = count_active(model, {})
    active = counts.non_embedding_params - zeros
    assert abs(active / paper - 1) < 0.01, active


def test_count_active_on_real_masks() -> None:
    model = tiny()
    masks = make_masks(model, 0.5, seed=0)
    c = count_active(model, masks)
    zeros = sum(int((~m).sum()) for m in masks.values())
    assert c.active_params == c.total_params - zeros
    assert c.active_non_embedding_params == c.non_embedding_params - zeros


def test_drop_fraction_cosine_schedule() -> None:
    assert drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert drop_fraction(100, 0.3, 100) == 0.0


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_dynamic_sparsity_keeps_density_and_moves_connections(method: str) -> None:
    model = tiny()
    masks = make_masks(model, 0.75, seed=0)
    masked = MaskedParams(model, masks)
    masked.apply_to_weights()
    opt = optimizer_for(model, PretrainConfig(lr=3e-3))
    dyn = DynamicSparsity(masked, method, total_steps=40, update_every=5, seed=0)
    cfg = LoopConfig.from_settings(PretrainConfig(steps=40, lr=3e-3, log_every=1000))
    train(model, opt, iter(SyntheticTokens(64, 16, 4)), cfg, Dist(), masked=masked, dynamic=dyn)
    now = masked.bool_masks()
    for name, before in masks.items():
        assert int(now[name].sum()) == int(before.sum()), name  # density exactly constant
    assert any(not torch.equal(now[n], masks[n]) for n in masks)  # connections moved
    assert masked.nonzeros_outside_mask() == 0


def test_rigl_grows_where_the_gradient_is_largest_and_at_zero() -> None:
    lin = torch.nn.Linear(4, 4, bias=False)

    class One(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = lin.weight

    model = One()
    with torch.no_grad():
        model.w.copy_(torch.arange(1.0, 17.0).view(4, 4))
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0] = True  # active: row 0 (values 1..4)
    masked = MaskedParams(model, {"w": mask})
    masked.apply_to_weights()
    model.w.grad = torch.zeros(4, 4)
    model.w.grad[3, 2] = 5.0  # the largest dense gradient sits at an inactive position
    dyn = DynamicSparsity(
        masked, "rigl", total_steps=100, update_every=1, initial_drop_fraction=0.5
    )
    moved = dyn.update(1)
    new = masked.bool_masks()["w"]
    assert moved == 1 and int(new.sum()) == 4
    assert not new[0, 0]  # the smallest-magnitude active weight was dropped
    assert new[3, 2] and model.w[3, 2] == 0  # grown where the gradient is largest, at zero
    assert model.w[0, 0] == 0
