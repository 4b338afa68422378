"""What pre-training losses must be read against.

- The unigram baseline: the validation cross-entropy (nats per token) of the training split's
  token frequencies, add-one smoothed. It is the loss of a model that ignores context; a
  variant below it has learned something beyond word frequencies.
- The sparsity gaps: each sparse variant's final validation loss against the dense variant of
  its size at equal steps (the dense final loss) and at equal training FLOPs (the dense loss at
  the step where its FLOPs reach the sparse variant's total, linearly interpolated between the
  dense curve's evaluations). FLOPs grow linearly with steps (static masks), so that step is
  `steps * sparse_flops / dense_flops`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mediswift.text.token_shards import read_token_stream
from mediswift.train.report import read_curve


def unigram_val_loss(
    train_shards: Sequence[Path], val_shards: Sequence[Path], vocab_size: int
) -> float:
    """Cross-entropy of the validation tokens under the train split's unigram distribution.

    Reads one shard at a time: memory is one shard plus a vocabulary-sized count vector."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for path in train_shards:
        counts += np.bincount(read_token_stream(Path(path)), minlength=vocab_size)[:vocab_size]
    log_p = np.log((counts + 1) / (counts.sum() + vocab_size))
    nll, n = 0.0, 0
    for path in val_shards:
        ids = read_token_stream(Path(path))
        nll -= float(log_p[ids].sum())
        n += len(ids)
    if n == 0:
        raise ValueError("no validation tokens to measure the unigram baseline on")
    return nll / n


def val_loss_at(curve: Path, step: float) -> float | None:
    """The validation loss at `step`, interpolated between evaluations (None outside them)."""
    points = [(r["step"], r["val_loss"]) for r in read_curve(curve) if r["val_loss"] is not None]
    for (s0, v0), (s1, v1) in zip(points, points[1:], strict=False):
        if s0 <= step <= s1:
            return v0 + (v1 - v0) * (step - s0) / (s1 - s0) if s1 > s0 else v0
    if points and points[-1][0] == step:
        return points[-1][1]
    return None


@dataclass(frozen=True)
class SparsityGap:
    variant: str
    dense: str
    val_loss: float
    dense_equal_steps: float
    equal_flops_step: float
    dense_equal_flops: float | None  # None: that step is before the dense curve's first eval


def sparsity_gaps(variants: Sequence[dict], home: Path) -> list[SparsityGap]:
    """One gap per sparse variant that has a dense variant of its size (records as listed by
    the pretrain stage: name, model, sparsity, final_val_loss, train_flops, loss_curve, steps)."""
    dense = {v["model"]: v for v in variants if v["sparsity"] == 0.0}
    out = []
    for v in variants:
        d = dense.get(v["model"])
        if v["sparsity"] == 0.0 or d is None:
            continue
        step = d["steps"] * v["train_flops"] / d["train_flops"]
        out.append(
            SparsityGap(
                variant=v["name"],
                dense=d["name"],
                val_loss=v["final_val_loss"],
                dense_equal_steps=d["final_val_loss"],
                equal_flops_step=step,
                dense_equal_flops=val_loss_at(home / d["loss_curve"], step),
            )
        )
    return out


def comparison_markdown(unigram: float | None, gaps: Sequence[SparsityGap]) -> str:
    """The unigram line and the gap table, as the report and table2.md show them."""
    lines = []
    if unigram is not None:
        lines.append(
            f"Unigram baseline (train token frequencies on the validation tokens): "
            f"{unigram:.3f} nats/token (ppl {np.exp(unigram):.1f})."
        )
    if gaps:
        lines += [
            "",
            "| Sparse variant | Val loss | Dense at equal steps | Gap | "
            "Dense at equal FLOPs (step) | Gap |",
            "|---|---|---|---|---|---|",
        ]
        for g in gaps:
            at_flops = (
                f"{g.dense_equal_flops:.3f} ({g.equal_flops_step:.0f})"
                if g.dense_equal_flops is not None
                else f"- ({g.equal_flops_step:.0f}: before the first evaluation)"
            )
            gap_flops = (
                f"{g.val_loss - g.dense_equal_flops:+.3f}"
                if g.dense_equal_flops is not None
                else "-"
            )
            lines.append(
                f"| {g.variant} | {g.val_loss:.3f} | {g.dense_equal_steps:.3f} | "
                f"{g.val_loss - g.dense_equal_steps:+.3f} | {at_flops} | {gap_flops} |"
            )
    return "\n".join(lines)
