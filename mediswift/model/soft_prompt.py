"""Soft prompts (the paper's Section 2.2.2): n trainable continuous embeddings, the virtual tokens
v_1..v_n, inserted between source and target so that a sequence reads [source; prompt; target].

`PromptedLM` wraps a `GPT`: token ids go through the model's own embedding, the rows at the
prompt positions are replaced by the prompt embeddings, and `GPT.forward_embeds` adds positions
and runs the decoder. The prompt sits at a different offset in every row of a batch (sources have
different lengths), so each row carries its own `prompt_start`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mediswift.model.gpt import GPT


class SoftPrompt(nn.Module):
    """`n_tokens` virtual tokens, each a `d_model` embedding."""

    def __init__(self, n_tokens: int, d_model: int):
        super().__init__()
        if n_tokens < 1:
            raise ValueError(f"a soft prompt needs at least one token, got {n_tokens}")
        self.n_tokens = n_tokens
        self.weight = nn.Parameter(torch.zeros(n_tokens, d_model))

    @torch.no_grad()
    def init_from_vocab(self, wte: nn.Embedding, generator: torch.Generator) -> None:
        """Start from the embeddings of random vocabulary tokens: on the scale the model knows."""
        ids = torch.randint(0, wte.num_embeddings, (self.n_tokens,), generator=generator)
        self.weight.copy_(wte.weight[ids.to(wte.weight.device)])

    def splice(self, tok_emb: torch.Tensor, prompt_start: torch.Tensor) -> torch.Tensor:
        """tok_emb (B, T, C) with rows prompt_start[b] .. + n - 1 replaced by the prompt."""
        B, T, C = tok_emb.shape
        offset = torch.arange(T, device=tok_emb.device)[None, :] - prompt_start[:, None]  # (B, T)
        is_prompt = (offset >= 0) & (offset < self.n_tokens)  # (B, T)
        prompt = self.weight[offset.clamp(0, self.n_tokens - 1)]  # (B, T, C)
        return torch.where(is_prompt[..., None], prompt.to(tok_emb.dtype), tok_emb)


class PromptedLM(nn.Module):
    """A GPT with a soft prompt spliced into its input; the whole thing trains densely."""

    def __init__(self, lm: GPT, n_prompt: int):
        super().__init__()
        self.lm = lm
        self.prompt = SoftPrompt(n_prompt, lm.config.d_model)

    @property
    def n_prompt(self) -> int:
        return self.prompt.n_tokens

    @property
    def block_size(self) -> int:
        return self.lm.config.block_size

    def forward(
        self, idx: torch.Tensor, prompt_start: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids (any id at the prompt positions; they are overwritten),
        prompt_start (B,) -> logits (B, T, V), mean loss over targets != -100."""
        x = self.prompt.splice(self.lm.wte(idx), prompt_start)  # (B, T, C)
        return self.lm.forward_embeds(x, targets)

    def loss(
        self, idx: torch.Tensor, prompt_start: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """The same loss as `forward(idx, prompt_start, targets)[1]`, with the output layer
        applied only at the positions in the loss (a few target tokens out of hundreds: for a
        small model with a large vocabulary the output layer is most of the cost)."""
        x = self.prompt.splice(self.lm.wte(idx), prompt_start)  # (B, T, C)
        h = hidden_states(self.lm, x)  # (B, T, C)
        keep = targets != -100  # (B, T)
        logits = torch.nn.functional.linear(h[keep], self.lm.wte.weight)  # (N, V)
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


def hidden_states(lm: GPT, x: torch.Tensor) -> torch.Tensor:
    """`GPT.forward_embeds` without the output layer: x (B, T, C) -> final hidden (B, T, C).

    Runs the GPT's own modules (positions, dropout, blocks, final LayerNorm) in the same order;
    tests check the logits agree.
    """
    pos = torch.arange(x.size(1), device=x.device)
    h = lm.drop(x + lm.wpe(pos))
    for block in lm.h:
        h = block(h)
    return lm.ln_f(h)


# --- Incremental decoding --------------------------------------------------------------------
# Scoring candidates and greedy generation re-read the same [source; prompt] prefix many times.
# A key/value cache computes the prefix once; continuations then cost only their own tokens.
# This walks the GPT's own modules (the same weights and the same arithmetic as
# `GPT.forward_embeds`; tests check the two agree), with per-row positions so that right-padded
# rows of different lengths decode together: a token at position p attends to cache slots <= p,
# and a row's padding always sits after its last real slot, so it is never attended.


def empty_cache(lm: GPT, batch: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer (K, V) buffers of shape (B, H, length, D)."""
    cfg = lm.config
    shape = (batch, cfg.n_head, length, cfg.d_model // cfg.n_head)
    w = lm.wte.weight
    return [(w.new_zeros(shape), w.new_zeros(shape)) for _ in range(cfg.n_layer)]


def select_cache(
    cache: list[tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The cache rows `rows` (repeats allowed: one prefix per candidate continuation)."""
    return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache]


@torch.no_grad()
def cached_hidden(
    lm: GPT,
    x: torch.Tensor,
    pos: torch.Tensor,
    cache: list[tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """x (B, S, C) embeddings at positions pos (B, S) -> final hidden states (B, S, C).

    Writes the new keys/values into `cache` at `pos`; each query attends to slots <= its pos.
    Inference only (no dropout). Logits are `hidden @ lm.wte.weight.T`, computed by the caller
    only where needed (the output layer dominates the cost of a small model).
    """
    B, S, C = x.shape
    h = x + lm.wpe(pos)  # (B, S, C)
    slots = torch.arange(cache[0][0].size(2), device=x.device)
    mask = slots[None, None, None, :] <= pos[:, None, :, None]  # (B, 1, S, T)
    for block, (K, V) in zip(lm.h, cache, strict=True):
        attn = block.attn
        H = attn.n_head
        y = block.ln_1(h)
        q = attn.q(y).view(B, S, H, C // H).transpose(1, 2)  # (B, H, S, D)
        k = attn.k(y).view(B, S, H, C // H).transpose(1, 2)
        v = attn.v(y).view(B, S, H, C // H).transpose(1, 2)
        where = pos[:, None, :, None].expand(B, H, S, C // H)
        K.scatter_(2, where, k)
        V.scatter_(2, where, v)
        a = torch.nn.functional.scaled_dot_product_attention(q, K, V, attn_mask=mask)
        h = h + attn.o(a.transpose(1, 2).reshape(B, S, C))
        h = h + block.mlp(block.ln_2(h))
    return lm.ln_f(h)
