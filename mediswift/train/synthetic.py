"""A synthetic token loader for benchmarks and trainer tests (no corpus needed).

Row i of the global stream is an arithmetic sequence modulo the vocabulary,
`(start_i + stride_i * t) % V`, with start and stride drawn from a generator seeded by
(seed, i): learnable (the loss falls well below log V once the model infers the stride), cheap,
and a pure function of the row index. Rank r of w takes rows r, r + w, r + 2w, ... in batches,
so the union of all ranks' batch k is the same rows a single process reads in k * w .. -- the
property the data-parallel equivalence test relies on. The same interface as the token-shard
loader: iterate for (batch, seq_len + 1) int64 tensors, `state_dict()` / `load_state_dict()`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class SyntheticTokens:
    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        max_stride: int = 7,
    ):
        self.vocab_size, self.seq_len, self.batch_size = vocab_size, seq_len, batch_size
        self.rank, self.world_size, self.seed, self.max_stride = rank, world_size, seed, max_stride
        self.position = 0  # this rank's next local row

    def row(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        start = torch.randint(self.vocab_size, (1,), generator=g)
        stride = torch.randint(1, self.max_stride + 1, (1,), generator=g)
        t = torch.arange(self.seq_len + 1)
        return (start + stride * t) % self.vocab_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        rows = [
            self.row((self.position + j) * self.world_size + self.rank)
            for j in range(self.batch_size)
        ]
        self.position += self.batch_size
        return torch.stack(rows)  # (B, T+1)

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = int(state["position"])
