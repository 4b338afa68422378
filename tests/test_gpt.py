"""The model: Table 5 parameter counts, shapes, tied embeddings, causality, forward_embeds, the
hidden states and cached decoding."""

from __future__ import annotations

import pytest
import torch

from mediswift.model import GPT, PAPER_NON_EMBEDDING_PARAMS, GPTConfig, model_config


@pytest.mark.parametrize("size", ["med", "large", "xl"])
def test_table5_non_embedding_params_within_1_percent(size: str) -> None:
    with torch.device("meta"):  # no memory: only shapes are needed to count
        model = GPT(model_config(size, vocab_size=42_384))
    n = model.num_params(non_embedding=True)
    assert abs(n / PAPER_NON_EMBEDDING_PARAMS[size] - 1) < 0.01, n


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_table5_architecture() -> None:
    med, large, xl = (model_config(s, 42_384) for s in ("med", "large", "xl"))
    assert (med.n_layer, med.d_model, med.n_head, med.d_model // med.n_head) == (24, 1024, 16, 64)
    assert (large.n_layer, large.d_model, large.n_head, large.d_model // large.n_head) == (
        18,
        1536,
        12,
        128,
    )
    assert (xl.n_layer, xl.d_model, xl.n_head, xl.d_model // xl.n_head) == (24, 2048, 16, 128)
    assert med.block_size == 1024 and med.d_ff == 4 * 1024


def tiny(vocab: int = 97) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layer=2, n_head=2, d_model=32, vocab_size=vocab, block_size=16))


def test_forward_shapes_and_loss() -> None:
    model = tiny()
    idx = torch.randint(97, (3, 10))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 10, 97)
    assert loss is not None and abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5
    assert model(idx)[1] is None


def test_tied_embeddings_and_separate_matrices() -> None:
    model = tiny()
    names = dict(model.named_parameters())
    assert "lm_head.weight" not in names  # the output layer is wte itself
    assert len(model.matrix_names()) == 6 * 2
    for n in model.matrix_names():
        assert names[n].dim() == 2
    # Changing wte changes the logits: it is the output layer too.
    idx = torch.randint(97, (1, 5))
    before = model(idx)[0].clone()
    with torch.no_grad():
        model.wte.weight[:, 0] += 1.0
    assert not torch.allclose(before, model(idx)[0])


def test_causal() -> None:
    model = tiny().eval()
    a = torch.randint(97, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 97  # change only the future
    la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[:, :8], lb[:, :8], atol=1e-6)
    assert not torch.allclose(la[:, 8:], lb[:, 8:])


def test_forward_embeds_matches_forward() -> None:
    model = tiny().eval()
    idx = torch.randint(97, (2, 7))
    logits, loss = model(idx, idx)
    logits2, loss2 = model.forward_embeds(model.wte(idx), idx)
    assert torch.equal(logits, logits2) and torch.equal(loss, loss2)


def test_forward_hidden_is_the_forward_before_the_output_layer() -> None:
    model = tiny().eval()
    x = model.wte(torch.randint(97, (2, 7)))  # (B, T, C)
    h = model.forward_hidden(x)
    assert h.shape == (2, 7, 32)
    assert torch.equal(model.output(h), model.forward_embeds(x)[0])


@torch.no_grad()
def test_cached_decoding_matches_the_full_forward() -> None:
    model = tiny().eval()
    x = model.wte(torch.randint(97, (2, 9)))
    full = model.forward_hidden(x)  # (B, T, C)
    cache = model.empty_cache(2, 12)
    pos = torch.arange(9).expand(2, 9)  # (B, T)
    prefix = model.forward_hidden(x[:, :5], pos[:, :5], cache)  # then one token at a time
    steps = [model.forward_hidden(x[:, t : t + 1], pos[:, t : t + 1], cache) for t in range(5, 9)]
    assert torch.allclose(torch.cat([prefix, *steps], dim=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="positions"):
        model.forward_hidden(x, cache=cache)


def test_too_long_sequence_is_refused() -> None:
    with pytest.raises(ValueError, match="block_size"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_gpt2_init_scales_residual_projections() -> None:
    model = GPT(model_config("small", 1000))
    std_fc = model.h[0].mlp.fc.weight.std().item()
    std_proj = model.h[0].mlp.proj.weight.std().item()
    assert abs(std_fc - 0.02) < 0.002
    assert abs(std_proj - 0.02 / (2 * 4) ** 0.5) < 0.001
    assert torch.all(model.h[0].attn.q.bias == 0)


def test_from_config_dict_roundtrip() -> None:
    cfg = model_config("tiny", 500)
    assert GPT.from_config(cfg.to_dict()).config == cfg
    with pytest.raises(ValueError, match="unknown GPTConfig"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_embd": 3})
