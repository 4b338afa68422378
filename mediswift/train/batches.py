"""Pre-training batches from token shards: fixed-length rows, shuffled, sharded by rank, resumable.

The token stream of an epoch is the shards' documents concatenated (EOS already ends each
document), the shards taken in an order shuffled by (seed, epoch). Row `i` of the epoch's stream
is `stream[i*L : i*L + L + 1]` with `L = seq_len`: `L + 1` tokens, so inputs `row[:-1]` and
targets `row[1:]` both have length `L`, and consecutive rows share one token (every token is a
target exactly once). Rows are shuffled within blocks of `buffer_rows` consecutive rows, by
(seed, epoch, block), and the shuffled sequence is dealt out round-robin to the ranks: rank `r`
of `W` gets rows `r, r + W, r + 2W, ...` of it, so ranks never share a row. Each epoch is cut to
a whole number of rows per rank, so all ranks see the same number of rows.

Memory is bounded by one block of rows plus the shards it spans (never the whole corpus): shard
sizes are read up front from the small `n_tokens` column only. Position = (epoch, rows this rank
has consumed in it); `state_dict()` saves it and `load_state_dict()` resumes at exactly the next
row, however the earlier rows were batched.

Every shard is checked against the digest its writer recorded (`mediswift.digests`) before
anything is read from it: a damaged one is moved aside, its tokenize unit is no longer done, and
the loader raises one line naming it (`verify_token_shard`), so nothing trains on it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mediswift.text.token_shards import read_token_counts, read_token_stream, verify_token_shard

STATE_VERSION = 1


class TokenBatches:
    """An iterator (endless by default) of (batch_size, seq_len + 1) int64 tensors for one rank.

    `shuffle=False` gives the rows in stream order with shards in the given order (for
    evaluation); `loop=False` stops after one epoch (the final partial batch is dropped).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        seq_len: int = 1024,
        batch_size: int = 8,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        loop: bool = True,
        buffer_rows: int = 4096,
        cached_shards: int = 2,
    ) -> None:
        if not paths:
            raise ValueError("no token shards given")
        if seq_len < 1 or batch_size < 1 or buffer_rows < 1:
            raise ValueError("seq_len, batch_size and buffer_rows must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.paths = [Path(p) for p in paths]
        self.seq_len, self.batch_size = seq_len, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.loop = seed, shuffle, loop
        self.buffer_rows = buffer_rows
        for p in self.paths:  # nothing is trained on bytes that do not match their digest
            verify_token_shard(p)
        self.shard_tokens = np.array([int(read_token_counts(p).sum()) for p in self.paths])
        total = int(self.shard_tokens.sum())
        self.rows_per_epoch = max(total - 1, 0) // seq_len
        self.rows_per_rank = self.rows_per_epoch // world_size
        if self.rows_per_rank == 0:
            raise ValueError(
                f"{total} tokens in {len(self.paths)} shard(s) make no row of {seq_len + 1} "
                f"tokens for each of {world_size} rank(s)"
            )
        self.epoch = 0
        self.consumed = 0  # rows of this rank consumed in `self.epoch`
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = max(1, cached_shards)
        self._block: tuple[int, int, np.ndarray] | None = None  # (epoch, block, rows)

    # ---- position -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "rank": self.rank,
            "world_size": self.world_size,
            "rows_per_epoch": self.rows_per_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in ("seed", "seq_len", "world_size", "rows_per_epoch"):
            if state.get(k) != getattr(self, k):
                raise ValueError(
                    f"loader state was saved with {k}={state.get(k)}, this loader has "
                    f"{k}={getattr(self, k)}: it cannot resume the same stream"
                )
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])

    @property
    def batches_per_epoch(self) -> int:
        return self.rows_per_rank // self.batch_size

    # ---- the stream -----------------------------------------------------------------------
    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(len(self.paths))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.paths))

    def _shard(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        toks = read_token_stream(self.paths[i])
        if len(toks) != self.shard_tokens[i]:
            raise ValueError(f"{self.paths[i]}: n_tokens does not match its input_ids")
        self._cache[i] = toks
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return toks

    def _tokens(self, epoch: int, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the epoch's stream, reading only the shards they lie in."""
        order = self._order(epoch)
        ends = np.cumsum(self.shard_tokens[order])
        out, pos = [], start
        k = int(np.searchsorted(ends, start, side="right"))
        while pos < stop:
            begin = int(ends[k - 1]) if k else 0
            toks = self._shard(int(order[k]))
            take = toks[pos - begin : min(stop, int(ends[k])) - begin]
            out.append(take)
            pos += len(take)
            k += 1
        return np.concatenate(out) if len(out) != 1 else out[0]

    def _block_rows(self, epoch: int, block: int) -> np.ndarray:
        """Rows of one block, shuffled: (n, seq_len + 1) in the shards' dtype."""
        if self._block is not None and self._block[:2] == (epoch, block):
            return self._block[2]
        L = self.seq_len
        first = block * self.buffer_rows
        n = min(self.buffer_rows, self.rows_per_epoch - first)
        toks = self._tokens(epoch, first * L, (first + n) * L + 1)
        rows = np.lib.stride_tricks.sliding_window_view(toks, L + 1)[::L][:n]
        if self.shuffle:
            rows = rows[np.random.default_rng([self.seed, epoch, block]).permutation(n)]
        rows = np.ascontiguousarray(rows)
        self._block = (epoch, block, rows)
        return rows

    def row(self, epoch: int, j: int) -> np.ndarray:
        """This rank's `j`-th row of `epoch`."""
        g = j * self.world_size + self.rank  # position in the epoch's shuffled row sequence
        block, i = divmod(g, self.buffer_rows)
        return self._block_rows(epoch, block)[i]

    def next_batch(self) -> torch.Tensor:
        """The next (batch_size, seq_len + 1) int64 batch of this rank; with `loop=False`,
        StopIteration when the epoch has no full batch left."""
        if not self.loop and self.consumed + self.batch_size > self.rows_per_rank:
            raise StopIteration
        rows = []
        while len(rows) < self.batch_size:
            if self.consumed >= self.rows_per_rank:
                self.epoch, self.consumed = self.epoch + 1, 0
            rows.append(self.row(self.epoch, self.consumed))
            self.consumed += 1
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        return self.next_batch()


def fixed_batches(
    paths: Sequence[str | Path],
    seq_len: int = 1024,
    batch_size: int = 8,
    max_batches: int | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> list[torch.Tensor]:
    """A fixed set of batches in stream order (no shuffling), the same on every call: for the
    validation loss. At most `max_batches`; the last one may hold fewer than `batch_size` rows
    when the shards run out (a small validation split still gives a batch)."""
    loader = TokenBatches(
        paths, seq_len, batch_size, rank=rank, world_size=world_size, shuffle=False, loop=False
    )
    n_rows = loader.rows_per_rank
    if max_batches is not None:
        n_rows = min(n_rows, max_batches * batch_size)
    return [
        torch.from_numpy(
            np.stack([loader.row(0, j) for j in range(b, min(b + batch_size, n_rows))]).astype(
                np.int64
            )
        )
        for b in range(0, n_rows, batch_size)
    ]
