"""Optimizer groups, the Appendix A.1 schedule, gradient accumulation, checkpoint round trips,
and a short run on real-format token shards through the variant runner."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from mediswift.config import PretrainConfig
from mediswift.model import GPT, GPTConfig
from mediswift.sparsity import MaskedParams, make_masks
from mediswift.train import checkpoint as ckpt
from mediswift.train.distributed import Dist
from mediswift.train.loop import LoopConfig, TrainState, train
from mediswift.train.optim import lr_at, optimizer_for, param_groups
from mediswift.train.synthetic import SyntheticTokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=64, block_size=32))


def loop(steps: int, lr: float, **kw) -> LoopConfig:
    """The loop of the pre-training settings (the paper's defaults) at `lr` for `steps`."""
    return LoopConfig.from_settings(PretrainConfig(steps=steps, lr=lr), **kw)


def test_schedule_warmup_then_cosine_to_10_percent() -> None:
    cfg = PretrainConfig()
    peak, steps = cfg.lr, 1000
    assert (peak, cfg.warmup_fraction, cfg.min_lr_ratio) == (2e-4, 0.1, 0.1)  # the paper's

    def lr(step: int) -> float:
        return lr_at(step, steps, peak, cfg.warmup_fraction, cfg.min_lr_ratio)

    assert lr(0) == pytest.approx(peak / 100)
    assert lr(99) == pytest.approx(peak)  # end of the 10% warmup
    assert lr(50) == pytest.approx(peak * 51 / 100)
    assert lr(steps) == pytest.approx(2e-5)  # floor: 10% of peak
    mid = 100 + (steps - 100) // 2
    assert lr(mid) == pytest.approx(2e-5 + 0.5 * (peak - 2e-5), rel=1e-3)
    lrs = [lr(s) for s in range(100, steps)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_weight_decay_only_on_matrices() -> None:
    model = tiny()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == set(model.matrix_names())
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    opt = optimizer_for(model, PretrainConfig())  # the paper's AdamW, from the settings
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8
    assert opt.defaults["lr"] == 2e-4
    assert opt.param_groups[0]["weight_decay"] == 0.1


def test_training_lowers_the_loss() -> None:
    model = tiny()
    opt = optimizer_for(model, PretrainConfig(lr=3e-3))
    cfg = loop(80, 3e-3)
    state = train(model, opt, iter(SyntheticTokens(64, 16, 8)), cfg, Dist())
    first, last = state.curve[0]["train_loss"], state.curve[-1]["train_loss"]
    assert first > math.log(64) - 0.3 and last < first - 0.5, (first, last)


def test_grad_accumulation_matches_one_big_batch() -> None:
    def run(micro: int, accum: int) -> tuple[list[float], torch.Tensor]:
        model = tiny()
        opt = optimizer_for(model, PretrainConfig(lr=1e-3))
        cfg = replace(loop(3, 1e-3, grad_accum=accum), log_every=1)
        st = train(model, opt, iter(SyntheticTokens(64, 16, micro)), cfg, Dist())
        return [r["train_loss"] for r in st.curve], model.h[0].mlp.fc.weight.detach()

    (loss_a, w_a), (loss_b, w_b) = run(8, 1), run(4, 2)
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert torch.allclose(w_a, w_b, atol=1e-6)
    assert not torch.allclose(w_a, tiny().h[0].mlp.fc.weight, atol=1e-4)  # it did train


def test_checkpoint_round_trip(tmp_path) -> None:
    model = tiny()
    masks = make_masks(model, 0.5, seed=0)
    masked = MaskedParams(model, masks)
    masked.apply_to_weights()
    opt = optimizer_for(model, PretrainConfig(lr=1e-3))
    cfg = replace(loop(3, 1e-3), log_every=1)
    st = train(model, opt, iter(SyntheticTokens(64, 16, 4)), cfg, Dist(), masked=masked)
    path = ckpt.save_checkpoint(
        ckpt.step_dir(tmp_path, st.step),
        model,
        masks,
        opt,
        {**st.to_json(), "loader": [{}]},
        extra_tensors={"rng.torch.0": torch.get_rng_state()},
    )
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "digests.json",
        "masks.safetensors",
        "model.safetensors",
        "train_state.json",
        "train_state.safetensors",
    ]
    assert not list(tmp_path.glob(".tmp-*"))
    loaded = ckpt.load_model(path)
    assert loaded.config == model.config
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    assert all(torch.equal(ckpt.load_masks(path)[n], masks[n]) for n in masks)
    # The optimizer state comes back keyed by parameter, bit for bit.
    opt2 = optimizer_for(loaded, PretrainConfig(lr=1e-3))
    files, js = ckpt.read_checkpoint(path)
    tensors = files[ckpt.TRAIN_TENSORS_FILE]
    ckpt.restore_optimizer(loaded, opt2, tensors, js["optimizer_groups"], where=str(path))
    for p1, p2 in zip(model.parameters(), loaded.parameters(), strict=True):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p1][k], opt2.state[p2][k])
    assert TrainState.from_json(js).curve == st.curve
    assert ckpt.latest_checkpoint(tmp_path) == path


def test_dense_checkpoint_has_no_masks_and_load_is_strict(tmp_path) -> None:
    model = tiny()
    path = ckpt.save_checkpoint(tmp_path / "final", model)
    assert not (path / "masks.safetensors").exists() and ckpt.load_masks(path) == {}
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["d_model"] = 64
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError):
        ckpt.load_model(path)
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        ckpt.load_model(tmp_path)


def test_prune_keeps_newest(tmp_path) -> None:
    model = tiny()
    for step in (1, 2, 3):
        ckpt.save_checkpoint(ckpt.step_dir(tmp_path, step), model)
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000002", "step_00000003"]
