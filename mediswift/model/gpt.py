"""A GPT-3-style decoder (nanoGPT-clear): pre-LayerNorm blocks, learned positions, GELU MLP with
d_ff = 4 d_model, tied input/output embeddings, dropout, and causal
`F.scaled_dot_product_attention` (flash/memory-efficient kernels on GPU).

The six weight matrices of a block -- attention q, k, v, o and MLP fc, proj -- are separate
`nn.Linear` modules so that each one can carry its own sparsity mask (the paper sparsifies exactly
these six, Section 3.3). The model knows nothing about masks: they live in `mediswift.sparsity`.

The model also decodes incrementally: `forward_hidden` takes per-row positions and a key/value
cache (`empty_cache`), so a prefix runs once and each continuation costs only its own tokens.

Shapes: B batch, T time (sequence), C = d_model, H heads, D = C // H head size, V vocabulary,
L cache slots.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from mediswift.model.sizes import size as _size

# Per layer, the (K, V) buffers of incremental decoding, each (B, H, L, D).
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GPTConfig:
    n_layer: int
    n_head: int
    d_model: int
    vocab_size: int
    block_size: int = 1024
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}")

    @property
    def d_ff(self) -> int:
        return 4 * self.d_model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s): {sorted(unknown)}")
        return cls(**data)


def model_config(
    size_name: str, vocab_size: int, block_size: int = 1024, dropout: float = 0.0
) -> GPTConfig:
    """The GPTConfig of a named size (`mediswift.model.sizes.SIZES`)."""
    s = _size(size_name)
    return GPTConfig(
        n_layer=s.n_layer,
        n_head=s.n_head,
        d_model=s.d_model,
        vocab_size=vocab_size,
        block_size=block_size,
        dropout=dropout,
    )


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        C = cfg.d_model
        self.n_head = cfg.n_head
        self.q = nn.Linear(C, C, bias=cfg.bias)
        self.k = nn.Linear(C, C, bias=cfg.bias)
        self.v = nn.Linear(C, C, bias=cfg.bias)
        self.o = nn.Linear(C, C, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); with `kv`, T new tokens at positions pos (B, T)."""
        B, T, C = x.shape
        H = self.n_head
        # (B, T, C) -> (B, H, T, D)
        q = self.q(x).view(B, T, H, C // H).transpose(1, 2)
        k = self.k(x).view(B, T, H, C // H).transpose(1, 2)
        v = self.v(x).view(B, T, H, C // H).transpose(1, 2)
        if kv is None:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )  # (B, H, T, D)
        else:
            y = self._attend_cached(q, k, v, pos, kv)  # type: ignore[arg-type]
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.o(y))

    @staticmethod
    def _attend_cached(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        pos: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Write k, v (B, H, T, D) into the cache at pos (B, T); each query attends to the slots
        <= its own position. Rows are right-padded to a common length, and a row's padding sits
        after its last real slot, so it is never attended."""
        K, V = kv  # (B, H, L, D)
        B, H, T, D = q.shape
        where = pos[:, None, :, None].expand(B, H, T, D)
        K.scatter_(2, where, k)
        V.scatter_(2, where, v)
        slots = torch.arange(K.size(2), device=q.device)  # (L,)
        mask = slots[None, None, None, :] <= pos[:, None, :, None]  # (B, 1, T, L)
        return F.scaled_dot_product_attention(q, K, V, attn_mask=mask)  # (B, H, T, D)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=cfg.bias)  # (C -> 4C)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)  # (4C -> C)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LN residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), pos, kv)
        x = x + self.mlp(self.ln_2(x))
        return x


# The weight matrices a block holds, by their name inside the block (what sparsity acts on).
BLOCK_MATRICES: tuple[str, ...] = (
    "attn.q.weight",
    "attn.k.weight",
    "attn.v.weight",
    "attn.o.weight",
    "mlp.fc.weight",
    "mlp.proj.weight",
)
# Projections that write into the residual stream: GPT-2 scales their init by 1/sqrt(2 n_layer).
RESIDUAL_PROJECTIONS: tuple[str, ...] = ("attn.o.weight", "mlp.proj.weight")


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)  # tokens; also the output layer
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model)  # learned positions
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.reset_parameters()

    @classmethod
    def from_config(cls, cfg: GPTConfig | dict[str, Any]) -> GPT:
        return cls(cfg if isinstance(cfg, GPTConfig) else GPTConfig.from_dict(cfg))

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02) everywhere, residual projections N(0, 0.02/sqrt(2 L)), zero bias."""
        for name, p in self.named_parameters():
            if name.endswith(".bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_f"):
                nn.init.ones_(p)
            elif name.endswith(RESIDUAL_PROJECTIONS):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.n_layer))
            else:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def matrix_names(self) -> list[str]:
        """Parameter names of the six weight matrices in every block (the sparsifiable ones)."""
        return [f"h.{i}.{m}" for i in range(self.config.n_layer) for m in BLOCK_MATRICES]

    def num_params(self, non_embedding: bool = False) -> int:
        """Trainable parameters (tied embeddings counted once); non_embedding drops wte and wpe."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, V); mean cross-entropy over targets != -100."""
        return self.forward_embeds(self.wte(idx), targets)  # (B, T, C)

    def forward_embeds(
        self, x: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, C) input embeddings (e.g. tokens with soft prompts spliced in) -> logits.

        Learned positions are added here, so callers pass bare token/prompt embeddings.
        """
        logits = self.output(self.forward_hidden(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100
            )
        return logits, loss

    def forward_hidden(
        self, x: torch.Tensor, pos: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """x (B, T, C) input embeddings -> final-LayerNormed hidden states (B, T, C).

        Without `cache`: the whole causal sequence, positions 0..T-1. With `cache` (from
        `empty_cache`): T new tokens at positions pos (B, T), their keys and values written into
        the cache; use it in eval mode (incremental decoding is for inference).
        """
        B, T, C = x.shape
        if pos is None:
            if cache is not None:
                raise ValueError("decoding with a cache needs the tokens' positions")
            if self.config.block_size < T:
                raise ValueError(
                    f"sequence of {T} tokens exceeds block_size {self.config.block_size}"
                )
            pos = torch.arange(T, device=x.device)  # (T,)
        x = self.drop(x + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, pos, None if cache is None else cache[i])
        return self.ln_f(x)

    def output(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., C) -> logits (..., V): the tied output layer."""
        return F.linear(h, self.wte.weight)

    def empty_cache(self, batch: int, length: int) -> KVCache:
        """Per layer (K, V) buffers of shape (B, H, length, D), on the model's device."""
        cfg = self.config
        shape = (batch, cfg.n_head, length, cfg.d_model // cfg.n_head)
        w = self.wte.weight
        return [(w.new_zeros(shape), w.new_zeros(shape)) for _ in range(cfg.n_layer)]


def select_cache(cache: KVCache, rows: torch.Tensor) -> KVCache:
    """The cache rows `rows` (repeats allowed: one prefix per candidate continuation)."""
    return [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in cache]
