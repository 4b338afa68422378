"""Soft prompts: placement, gradients, and the KV-cached path agreeing with the plain forward."""

from __future__ import annotations

import pytest
import torch

from mediswift.model.gpt import GPT, GPTConfig
from mediswift.model.soft_prompt import PromptedLM, SoftPrompt, cached_hidden, empty_cache


def tiny_lm(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=16, vocab_size=50, block_size=32))


def test_splice_places_prompt_per_row() -> None:
    sp = SoftPrompt(3, 4)
    with torch.no_grad():
        sp.weight.copy_(torch.arange(12.0).view(3, 4) + 100)
    emb = torch.zeros(2, 8, 4)
    out = sp.splice(emb, torch.tensor([1, 4]))
    for b, start in enumerate([1, 4]):
        for t in range(8):
            if start <= t < start + 3:
                assert torch.equal(out[b, t], sp.weight[t - start])
            else:
                assert torch.equal(out[b, t], emb[b, t])


def test_prompt_gets_gradient_and_ids_under_it_do_not_matter() -> None:
    model = PromptedLM(tiny_lm(), 2)
    model.prompt.init_from_vocab(model.lm.wte, torch.Generator().manual_seed(0))
    idx = torch.tensor([[5, 6, 7, 0, 0, 9, 10]])
    starts = torch.tensor([3])
    targets = torch.full_like(idx, -100)
    targets[0, 4:6] = torch.tensor([9, 10])
    logits, loss = model(idx, starts, targets)
    loss.backward()
    assert model.prompt.weight.grad is not None and model.prompt.weight.grad.abs().sum() > 0
    other = idx.clone()
    other[0, 3:5] = torch.tensor([40, 41])  # different ids at the prompt slots: same output
    with torch.no_grad():
        assert torch.allclose(model(other, starts)[0], logits)


def test_cached_hidden_matches_forward_embeds() -> None:
    lm = tiny_lm().eval()
    x = torch.randn(3, 10, 16)
    full, _ = lm.forward_embeds(x)  # (B, T, V)
    cache = empty_cache(lm, 3, 12)
    pos = torch.arange(10).expand(3, 10)
    h = cached_hidden(lm, x, pos, cache)
    assert torch.allclose(h @ lm.wte.weight.T, full, atol=1e-5)
    # Incremental: the first 6 positions, then the rest one token at a time, per-row offsets.
    cache = empty_cache(lm, 3, 12)
    cached_hidden(lm, x[:, :6], pos[:, :6], cache)
    for t in range(6, 10):
        step = cached_hidden(lm, x[:, t : t + 1], pos[:, t : t + 1], cache)
        assert torch.allclose(step[:, 0] @ lm.wte.weight.T, full[:, t], atol=1e-5)


def test_cached_hidden_ignores_padding_after_a_row() -> None:
    lm = tiny_lm().eval()
    x = torch.randn(1, 5, 16)
    ref, _ = lm.forward_embeds(x)
    # Row 0 is the 5-token sequence padded to 8 with garbage; its positions 0..4 are unaffected.
    padded = torch.cat([x, torch.randn(1, 3, 16) * 10], dim=1)
    h = cached_hidden(lm, padded, torch.arange(8)[None], empty_cache(lm, 1, 8))
    assert torch.allclose(h[:, :5] @ lm.wte.weight.T, ref, atol=1e-5)


def test_loss_with_selective_output_layer_matches_forward() -> None:
    model = PromptedLM(tiny_lm(), 2)
    idx = torch.randint(0, 50, (3, 12))
    starts = torch.tensor([2, 5, 7])
    targets = torch.full_like(idx, -100)
    targets[0, 4:7] = torch.tensor([1, 2, 3])
    targets[2, 9:11] = torch.tensor([4, 5])
    _, want = model(idx, starts, targets)
    got = model.loss(idx, starts, targets)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    assert model.prompt.weight.grad is not None
