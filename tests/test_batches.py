"""The pre-training loader: exact row length, full and disjoint coverage, shuffling, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mediswift.text.token_shards import read_token_docs, write_token_shard
from mediswift.train.batches import TokenBatches, fixed_batches

BIG_VOCAB = 1_000_000  # int32 ids, so every token of the test corpus can be unique


def make_shards(
    root: Path, sizes: list[list[int]], vocab_size: int = BIG_VOCAB, stride: int = 100_000
) -> list[Path]:
    """Shard k holds documents of the given lengths; every token id is unique (k*stride + i)."""
    paths = []
    for k, doc_lens in enumerate(sizes):
        ids, start = [], k * stride
        for n in doc_lens:
            ids.append(list(range(start, start + n)))
            start += n
        p = root / f"s{k}.parquet"
        write_token_shard(p, [f"d{k}-{i}" for i in range(len(ids))], ids, vocab_size)
        paths.append(p)
    return paths


@pytest.fixture
def shards(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    return make_shards(tmp_path, [list(rng.integers(1, 60, size=20)) for _ in range(7)])


def all_rows(loader: TokenBatches) -> list[tuple[int, ...]]:
    return [tuple(r) for b in loader for r in b.tolist()]


def test_rows_are_seq_len_plus_one_and_cover_every_target(shards: list[Path]) -> None:
    loader = TokenBatches(shards, seq_len=16, batch_size=1, seed=3, loop=False, buffer_rows=10)
    rows = all_rows(loader)
    assert len(rows) == loader.rows_per_epoch and all(len(r) == 17 for r in rows)
    # Each token is a target exactly once: targets of all rows are disjoint and cover the stream
    # (all tokens but the first and the short tail).
    targets = [t for r in rows for t in r[1:]]
    assert len(targets) == len(set(targets)) == 16 * loader.rows_per_epoch
    total = int(loader.shard_tokens.sum())
    assert total - 1 - len(targets) < 16
    # Rows are contiguous windows of the stream: inside a shard ids step by one.
    for r in rows:
        jumps = np.flatnonzero(np.diff(r) != 1)
        assert all(r[j + 1] % 100_000 == 0 for j in jumps)  # only at a shard start


def test_batches_shape_and_dtype(tmp_path: Path) -> None:
    paths = make_shards(tmp_path, [[300, 200], [500]], vocab_size=70_000, stride=1000)
    b = next(TokenBatches(paths, seq_len=32, batch_size=4))
    assert b.shape == (4, 33) and b.dtype == torch.int64
    small = make_shards(tmp_path / "u16", [[50] * 10, [60]], vocab_size=60_000, stride=1000)
    b = next(TokenBatches(small, seq_len=8, batch_size=2))
    assert b.shape == (2, 9) and b.dtype == torch.int64


def test_ranks_are_disjoint_and_complete(shards: list[Path]) -> None:
    world = 3
    per_rank = [
        all_rows(
            TokenBatches(shards, 16, 1, rank=r, world_size=world, seed=5, loop=False, buffer_rows=8)
        )
        for r in range(world)
    ]
    sets = [set(rows) for rows in per_rank]
    assert len({len(rows) for rows in per_rank}) == 1  # same number of rows on every rank
    for i in range(world):
        for j in range(i + 1, world):
            assert not sets[i] & sets[j]
    single = set(all_rows(TokenBatches(shards, 16, 1, seed=5, loop=False, buffer_rows=8)))
    assert set().union(*sets) <= single
    assert len(single) - len(set().union(*sets)) < world


def test_shuffle_is_seeded_per_epoch(shards: list[Path]) -> None:
    def first(seed: int, n: int = 12) -> list[list[int]]:
        it = TokenBatches(shards, 16, 2, seed=seed, buffer_rows=10)
        return [next(it).tolist() for _ in range(n)]

    assert first(1) == first(1)
    assert first(1) != first(2)
    it = TokenBatches(shards, 16, 1, seed=1, buffer_rows=10)
    n = it.rows_per_rank
    epoch0 = [next(it).tolist() for _ in range(n)]
    epoch1 = [next(it).tolist() for _ in range(n)]
    assert it.epoch == 1 and epoch0 != epoch1
    ordered = all_rows(TokenBatches(shards, 16, 1, shuffle=False, loop=False))
    assert [r[0] for r in ordered] == sorted(r[0] for r in ordered)


@pytest.mark.parametrize("consumed", [0, 3, 9, 40])  # 40 crosses into the next epoch
def test_resume_gives_the_same_next_batch(shards: list[Path], consumed: int) -> None:
    kw = dict(seq_len=16, batch_size=3, rank=1, world_size=2, seed=11, buffer_rows=8)
    a = TokenBatches(shards, **kw)
    for _ in range(consumed):
        next(a)
    state = a.state_dict()
    expected = [next(a) for _ in range(3)]
    b = TokenBatches(shards, **kw)
    b.load_state_dict(state)
    for e in expected:
        assert torch.equal(next(b), e)
    with pytest.raises(ValueError, match="seed"):
        TokenBatches(shards, **{**kw, "seed": 12}).load_state_dict(state)


def test_bounded_memory(shards: list[Path]) -> None:
    it = TokenBatches(shards, 16, 4, seed=0, buffer_rows=8, cached_shards=2)
    for _ in range(3 * it.batches_per_epoch):
        next(it)
        assert len(it._cache) <= 2
        assert it._block is not None and len(it._block[2]) <= 8


def test_fixed_batches(shards: list[Path]) -> None:
    a = fixed_batches(shards, 16, 5, max_batches=3)
    b = fixed_batches(shards, 16, 5, max_batches=3)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    every = fixed_batches(shards, 16, 5)
    n_rows = sum(len(x) for x in every)
    assert n_rows == TokenBatches(shards, 16, 5).rows_per_epoch
    assert len(every[-1]) <= 5


def test_errors(tmp_path: Path) -> None:
    paths = make_shards(tmp_path, [[5, 5]])
    with pytest.raises(ValueError, match="no row"):
        TokenBatches(paths, seq_len=16)
    with pytest.raises(ValueError, match="rank"):
        TokenBatches(paths, seq_len=2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no token shards"):
        TokenBatches([], seq_len=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        write_token_shard(tmp_path / "bad.parquet", ["x"], [[5, 70_000]], 60_000)
    assert not (tmp_path / "bad.parquet").exists()
    assert read_token_docs(paths[0])[1] == [list(range(5)), list(range(5, 10))]


def test_streamed_shard_with_many_row_groups(tmp_path: Path, monkeypatch) -> None:
    from mediswift.text import token_shards

    monkeypatch.setattr(token_shards, "ROW_GROUP_DOCS", 3)
    docs = [list(range(i, i + 5 + i % 4)) for i in range(10)]
    path = tmp_path / "multi.parquet"
    n = write_token_shard(path, [f"d{i}" for i in range(10)], docs, 100)
    assert pq.ParquetFile(path).metadata.num_row_groups == 4
    assert read_token_docs(path) == ([f"d{i}" for i in range(10)], docs)
    assert n == sum(map(len, docs))
    stream = [t for d in docs for t in d]
    rows = fixed_batches([path], seq_len=4, batch_size=100)[0].tolist()
    assert rows[1] == stream[4:9]
    assert not list(tmp_path.glob(".*.tmp"))
