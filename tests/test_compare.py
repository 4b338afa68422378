"""The yardsticks of the pre-training table: unigram baseline and sparsity gaps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mediswift.finetune.tables import _ci
from mediswift.text.token_shards import write_token_shard
from mediswift.train.compare import (
    comparison_markdown,
    sparsity_gaps,
    unigram_val_loss,
    val_loss_at,
)


def test_unigram_loss_is_the_smoothed_cross_entropy(tmp_path: Path) -> None:
    train = tmp_path / "train.parquet"
    val = tmp_path / "val.parquet"
    write_token_shard(train, ["a", "b"], [[0, 0, 1], [0, 2]], vocab_size=4)
    write_token_shard(val, ["c"], [[0, 3, 1]], vocab_size=4)
    # counts 3,1,1,0 over 5 tokens; add-one over 4 entries: p(1) = 2/9, p(3) = 1/9. The rows
    # are [0, 3], [3, 1]: their targets 3 and 1 (the stream's first token is never a target).
    expected = -(math.log(1 / 9) + math.log(2 / 9)) / 2
    assert unigram_val_loss([train], [val], 4, 1, 1, None) == pytest.approx(expected)


def test_unigram_loss_reads_the_validation_loss_tokens(tmp_path: Path) -> None:
    """A context-free model predicting the unigram distribution scores, through the trainer's
    own validation batches and `evaluate`, exactly the unigram baseline: the same tokens, each
    batch weighing the same (also a short last batch), not every validation token."""
    import numpy as np
    import torch

    from mediswift.text.token_shards import read_token_stream
    from mediswift.train.batches import fixed_batches
    from mediswift.train.distributed import Dist
    from mediswift.train.loop import evaluate

    rng = np.random.default_rng(0)
    train, val = tmp_path / "train.parquet", tmp_path / "val.parquet"
    write_token_shard(train, ["a"], [rng.integers(0, 8, 200).tolist()], vocab_size=8)
    # rare tokens at the end, past the batches read below: they must not count
    tail = rng.integers(0, 8, 150).tolist() + [7] * 40
    write_token_shard(val, ["b", "c"], [tail[:90], tail[90:]], vocab_size=8)
    counts = np.bincount(read_token_stream(train), minlength=8)
    log_p = torch.tensor(np.log((counts + 1) / (counts.sum() + 8)))

    class Unigram(torch.nn.Module):
        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[None, torch.Tensor]:
            return None, -log_p[y].mean()

    for max_batches in (2, None):  # None: every row, the last batch short (47 rows by 3)
        batches = fixed_batches([val], 4, 3, max_batches)
        model_loss = evaluate(Unigram(), batches, Dist())
        got = unigram_val_loss([train], [val], 8, 4, 3, max_batches)
        assert got == pytest.approx(model_loss, rel=1e-6)  # evaluate sums in float32
    everything = -float(log_p[torch.from_numpy(read_token_stream(val).astype(np.int64))].mean())
    assert unigram_val_loss([train], [val], 8, 4, 3, 2) != pytest.approx(everything, rel=1e-3)


def _curve(path: Path, rows: list[tuple[int, float | None]]) -> str:
    lines = ["step,train_loss,val_loss,lr"]
    lines += [f"{s},5.0,{'' if v is None else v},0.001" for s, v in rows]
    path.write_text("\n".join(lines) + "\n")
    return path.name


def test_dense_loss_at_equal_flops_is_interpolated(tmp_path: Path) -> None:
    curve = _curve(tmp_path / "dense.csv", [(50, None), (100, 6.0), (200, 5.0), (300, 4.0)])
    assert val_loss_at(tmp_path / curve, 250) == pytest.approx(4.5)
    assert val_loss_at(tmp_path / curve, 300) == pytest.approx(4.0)
    assert val_loss_at(tmp_path / curve, 60) is None  # before the first evaluation
    dense = {"name": "t-dense", "model": "t", "sparsity": 0.0, "final_val_loss": 4.0,
             "train_flops": 1000.0, "loss_curve": curve, "steps": 300}  # fmt: skip
    sparse = {**dense, "name": "t-s75", "sparsity": 0.75, "final_val_loss": 4.4,
              "train_flops": 750.0}  # fmt: skip
    other = {**sparse, "name": "u-s50", "model": "u"}  # no dense of its size: no gap
    (gap,) = sparsity_gaps([dense, sparse, other], tmp_path)
    assert gap.equal_flops_step == pytest.approx(225)
    assert gap.dense_equal_flops == pytest.approx(4.75)
    text = comparison_markdown(5.5, [gap])
    assert "| t-s75 | 4.400 | 4.000 | +0.400 | - (not trained" in text
    assert "| 4.750 (225) | -0.350 |" in text
    assert "Dense curve at equal FLOPs, mid-schedule (LR not decayed: favours sparse)" in text
    assert "5.500 nats/token" in text


def test_the_iso_flops_baseline_is_the_dense_run_at_the_sparse_level(tmp_path: Path) -> None:
    curve = _curve(tmp_path / "dense.csv", [(100, 6.0), (200, 5.0), (300, 4.0)])
    dense = {"name": "t-dense", "model": "t", "sparsity": 0.0, "final_val_loss": 4.0,
             "train_flops": 1000.0, "loss_curve": curve, "steps": 300}  # fmt: skip
    iso75 = {**dense, "name": "t-dense-iso75", "final_val_loss": 4.2, "steps": 225,
             "train_flops": 750.0, "iso_flops_of": 0.75}  # fmt: skip
    iso50 = {**iso75, "name": "t-dense-iso50", "final_val_loss": 4.1, "iso_flops_of": 0.5}
    sparse = {**dense, "name": "t-s75", "sparsity": 0.75, "final_val_loss": 4.4,
              "train_flops": 750.0}  # fmt: skip
    # Listed after the dense run, the baselines (sparsity 0 too) must not stand in for it.
    (gap,) = sparsity_gaps([dense, iso50, iso75, sparse], tmp_path)
    assert (gap.dense, gap.dense_equal_steps) == ("t-dense", 4.0)
    assert (gap.iso_flops, gap.dense_iso_flops) == ("t-dense-iso75", 4.2)
    text = comparison_markdown(None, [gap])
    assert "| t-s75 | 4.400 | 4.000 | +0.400 | 4.200 (t-dense-iso75) | +0.200 | 4.750 (225)" in text


def test_units_add_one_dense_baseline_per_sparse_level_at_its_flops(tmp_path: Path) -> None:
    from mediswift.artifacts import Artifact
    from mediswift.config import load_recipe
    from mediswift.flops import flops_for
    from mediswift.manifests import TokenizeManifest
    from mediswift.stages.pretrain import units

    cfg = load_recipe("demo", overrides={"pretrain": {"iso_flops_baselines": True}})
    tokens = TokenizeManifest.model_construct(vocab_size=cfg.vocab.vocab_size, shards=[])
    tokenize = Artifact("tokenize", "k" * 16, tmp_path / "tokenize")
    planned = {v.spec.name: v for v in units(cfg, tmp_path, tokenize, tokens)}
    pc, size = cfg.pretrain, cfg.pretrain.sizes[0]
    for s in [s for s in pc.sparsity_levels if s > 0]:
        base = planned[f"{size}-dense-iso{round(s * 100)}"]
        assert base.spec.sparsity == 0.0 and base.iso_flops_of == s
        sparse = flops_for(size, s, pc.tokens, cfg.vocab.vocab_size, pc.seq_len)
        tokens_iso = base.spec.cfg.steps * pc.global_batch * pc.seq_len
        dense = flops_for(size, 0.0, tokens_iso, cfg.vocab.vocab_size, pc.seq_len)
        assert dense == pytest.approx(sparse, rel=2 / base.spec.cfg.steps)
        assert base.spec.cfg.warmup_fraction == pc.warmup_fraction  # its own full schedule
    assert len({v.unit.key for v in planned.values()}) == len(planned)  # every run its own unit
    plain = load_recipe("demo")
    assert not [n for n in (v.spec.name for v in units(plain, tmp_path, tokenize, tokens))
                if "iso" in n]  # fmt: skip


def test_intervals_are_marked_against_the_baselines() -> None:
    assert _ci((0.30, 0.40), (0.10, 0.20), 1) == "[30.0, 40.0] above baseline"
    assert _ci((0.15, 0.40), (0.10, 0.20), 1) == "[15.0, 40.0]"
    assert _ci((0.01, 0.05), (0.10, 0.20), 1) == "[1.0, 5.0] below baseline"
