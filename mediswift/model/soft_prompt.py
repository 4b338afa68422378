"""Soft prompts (the paper's Section 2.2.2): n trainable continuous embeddings, the virtual tokens
v_1..v_n, inserted between source and target so that a sequence reads [source; prompt; target].

`PromptedLM` wraps a `GPT`: token ids go through the model's own embedding, the rows at the
prompt positions are replaced by the prompt embeddings, and the model's embeddings API
(`GPT.forward_embeds`, `GPT.forward_hidden`) adds positions and runs the decoder. The prompt sits
at a different offset in every row of a batch (sources have different lengths), so each row
carries its own `prompt_start`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from mediswift.model.gpt import GPT, KVCache, select_cache

__all__ = ["PromptedLM", "SoftPrompt", "cached_hidden", "empty_cache", "select_cache"]


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
        h = self.lm.forward_hidden(x)  # (B, T, C)
        keep = targets != -100  # (B, T)
        logits = self.lm.output(h[keep])  # (N, V)
        return torch.nn.functional.cross_entropy(logits.float(), targets[keep])


# --- Incremental decoding --------------------------------------------------------------------
# Scoring candidates and greedy generation re-read the same [source; prompt] prefix many times;
# the model's key/value cache computes the prefix once. These are the model's own cached
# decoding under the names the scoring code uses.


def empty_cache(lm: GPT, batch: int, length: int) -> KVCache:
    """Per layer (K, V) buffers of shape (B, H, length, D)."""
    return lm.empty_cache(batch, length)


@torch.no_grad()
def cached_hidden(lm: GPT, x: torch.Tensor, pos: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """x (B, S, C) embeddings at positions pos (B, S) -> final hidden states (B, S, C).

    Writes the new keys/values into `cache` at `pos`; each query attends to slots <= its pos.
    Inference only (call it in eval mode). Logits are `lm.output(hidden)`, computed by the caller
    only where needed (the output layer dominates the cost of a small model).
    """
    return lm.forward_hidden(x, pos, cache)
