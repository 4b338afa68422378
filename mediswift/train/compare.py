"""What pre-training losses must be read against.

- The unigram baseline: the validation cross-entropy (nats per token) of the training split's
  token frequencies, add-one smoothed. It is the loss of a model that ignores context; a
  variant below it has learned something beyond word frequencies. It is scored on exactly the
  validation loss's targets (the first `eval_batches` batches of `micro_batch` rows, from
  `fixed_batches`, each batch weighing the same as in `loop.evaluate`), not on every
  validation token: a baseline measured on other text would not be comparable.
- The sparsity gaps: each sparse variant's final validation loss against dense runs of its
  size: at equal steps (the dense variant's final loss); at equal training FLOPs with its own
  schedule (the iso-FLOPs dense baseline, `pretrain.iso_flops_baselines`: a dense run of
  `steps * sparse_flops / dense_flops` steps, warmed up and decayed over those steps), the fair
  comparison; and the dense curve at equal FLOPs, mid-schedule (the dense run's loss at that
  step, linearly interpolated between evaluations). The last one favours sparse: there the
  dense run's learning rate has not decayed yet (at 75% sparsity in the paper's recipes it is
  still 40-80% of its peak), so it is marked as such wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mediswift.text.token_shards import read_token_stream
from mediswift.train.batches import fixed_batches
from mediswift.train.report import read_curve


def unigram_val_loss(
    train_shards: Sequence[Path],
    val_shards: Sequence[Path],
    vocab_size: int,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
) -> float:
    """Cross-entropy under the train split's unigram distribution of the validation batches
    the variants are scored on (`fixed_batches` with the same arguments as
    `variant.make_val_batches`): the mean over batches of each batch's mean target loss.

    Reads one train shard at a time: memory is one shard plus a vocabulary-sized count vector
    (and the validation batches, which the trainer holds anyway)."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for path in train_shards:
        counts += np.bincount(read_token_stream(Path(path)), minlength=vocab_size)[:vocab_size]
    log_p = np.log((counts + 1) / (counts.sum() + vocab_size))
    if not val_shards:
        raise ValueError("no validation tokens to measure the unigram baseline on")
    batches = fixed_batches(val_shards, seq_len, batch_size, max_batches)
    # Targets are each row's tokens after the first, as the model's loss reads them.
    losses = [-float(log_p[b[:, 1:].numpy()].mean()) for b in batches]
    return sum(losses) / len(losses)


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
    dense_equal_flops: float | None  # mid-schedule; None: before the dense curve's first eval
    iso_flops: str | None = None  # the iso-FLOPs dense baseline's name, when one was trained
    dense_iso_flops: float | None = None  # its final validation loss


def dense_of(dense: Sequence[dict], v: dict) -> dict | None:
    """The dense run of `v`'s size, of its pre-training seed where one was trained (seeds of an
    arm: `pretrain.seeds`), else the last listed."""
    mine = [d for d in dense if d["model"] == v["model"]]
    return next((d for d in mine if d.get("seed") == v.get("seed")), mine[-1] if mine else None)


def sparsity_gaps(variants: Sequence[dict], home: Path) -> list[SparsityGap]:
    """One gap per sparse variant that has a dense variant of its size (records as listed by
    the pretrain stage: name, model, sparsity, final_val_loss, train_flops, loss_curve, steps,
    iso_flops_of)."""
    dense = [v for v in variants if v["sparsity"] == 0 and not v.get("iso_flops_of")]
    iso = {(v["model"], v["iso_flops_of"]): v for v in variants if v.get("iso_flops_of")}
    out = []
    for v in variants:
        d = dense_of(dense, v)
        if v["sparsity"] == 0.0 or d is None:
            continue
        if v.get("final_val_loss") is None or d.get("final_val_loss") is None:
            continue  # a loss that is missing has no gap (the tables say "missing")
        step = d["steps"] * v["train_flops"] / d["train_flops"]
        base = iso.get((v["model"], v["sparsity"]))
        out.append(
            SparsityGap(
                variant=v["name"],
                dense=d["name"],
                val_loss=v["final_val_loss"],
                dense_equal_steps=d["final_val_loss"],
                equal_flops_step=step,
                dense_equal_flops=val_loss_at(home / d["loss_curve"], step),
                iso_flops=base["name"] if base else None,
                dense_iso_flops=base["final_val_loss"] if base else None,
            )
        )
    return out


def comparison_markdown(unigram: float | None, gaps: Sequence[SparsityGap]) -> str:
    """The unigram line and the gap table, as the report and table2.md show them."""
    lines = []
    if unigram is not None:
        lines.append(
            f"Unigram baseline (train token frequencies, on the validation loss's tokens): "
            f"{unigram:.3f} nats/token (ppl {np.exp(unigram):.1f})."
        )
    if gaps:
        lines += [
            "",
            "| Sparse variant | Val loss | Dense, equal steps | Gap | Dense, equal FLOPs, own "
            "schedule (iso-FLOPs run) | Gap | Dense curve at equal FLOPs, mid-schedule (LR not "
            "decayed: favours sparse)* (step) | Gap |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for g in gaps:
            iso = (
                (
                    f"{g.dense_iso_flops:.3f} ({g.iso_flops})",
                    f"{g.val_loss - g.dense_iso_flops:+.3f}",
                )
                if g.dense_iso_flops is not None
                else ("- (not trained: `pretrain.iso_flops_baselines`)", "-")
            )
            mid = (
                (f"{g.dense_equal_flops:.3f} ({g.equal_flops_step:.0f})",
                 f"{g.val_loss - g.dense_equal_flops:+.3f}")
                if g.dense_equal_flops is not None
                else (f"- ({g.equal_flops_step:.0f}: before the first evaluation)", "-")
            )  # fmt: skip
            lines.append(
                f"| {g.variant} | {g.val_loss:.3f} | {g.dense_equal_steps:.3f} | "
                f"{g.val_loss - g.dense_equal_steps:+.3f} | {iso[0]} | {iso[1]} | {mid[0]} | "
                f"{mid[1]} |"
            )
        lines += [
            "",
            "\\* Read mid-schedule from the dense run's own curve, before its learning rate has "
            "decayed: this column favours sparse. The iso-FLOPs run is the fair comparison.",
        ]
    return "\n".join(lines)
