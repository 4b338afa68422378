"""Checkpoint bytes by formula: what `mediswift.train.checkpoint` (format 2) writes for a model.

Dense tensors (embeddings, LayerNorms, biases, and every tensor of a dense model) take their
dtype's bytes per element, for the weights and, in a resumable checkpoint, both AdamW moments.
A sparsified matrix of n elements at sparsity s takes, in bytes:
  mask     n / 8                    (packed bits, stored once for the weight and its moments)
  weights  (1 - s) n x dtype + s n / 8
           (the kept values, and the sign of each pruned zero: masking multiplies by 0, which
            leaves about half the pruned weights at -0.0, and loading is bit-identical)
  moments  2 (1 - s) n x dtype      (AdamW's pruned moments are +0.0: no sign bits)
File headers, the step counters and RNG states are left out (kilobytes).
"""

from __future__ import annotations

from dataclasses import dataclass

FP32 = 4  # master weights and AdamW moments stay fp32 under bf16 autocast


@dataclass(frozen=True)
class ParamCounts:
    dense: int  # elements of the tensors never sparsified
    sparse: int  # elements of the sparsifiable matrices (dense too at sparsity 0)


def gpt_params(n_layer: int, d_model: int, vocab: int, block: int) -> ParamCounts:
    """The parameters of `mediswift.model.gpt.GPT` (tied embeddings): per block 12 d^2 in its
    six matrices (the sparsifiable ones) and 13 d of biases and LayerNorms; wte, wpe, ln_f."""
    sparse = n_layer * 12 * d_model**2
    dense = n_layer * 13 * d_model + vocab * d_model + block * d_model + 2 * d_model
    return ParamCounts(dense, sparse)


def checkpoint_bytes(
    params: ParamCounts, sparsity: float, moments: bool, dtype_bytes: int = FP32
) -> float:
    """Bytes of one checkpoint: weights (+ masks), and AdamW moments when `moments`."""
    copies = 3 if moments else 1  # the weights, then exp_avg and exp_avg_sq
    dense = params.dense * dtype_bytes * copies
    if sparsity == 0:
        return dense + params.sparse * dtype_bytes * copies
    n, kept = params.sparse, (1 - sparsity) * params.sparse
    return dense + n / 8 + kept * dtype_bytes * copies + sparsity * n / 8


def dense_bytes(
    params: ParamCounts, sparsity: float, moments: bool, dtype_bytes: int = FP32
) -> float:
    """The same checkpoint in format 1: every tensor dense, masks as one byte an element."""
    masks = params.sparse if sparsity > 0 else 0
    return (params.dense + params.sparse) * dtype_bytes * (3 if moments else 1) + masks


def active_non_embedding(n_layer: int, d_model: int, sparsity: float) -> int:
    """The active non-embedding parameters the trainer records: every block and the final
    LayerNorm (wte and wpe are the embedding), less the matrices' zeros."""
    dense = n_layer * (12 * d_model**2 + 13 * d_model) + 2 * d_model
    return dense - n_layer * round(sparsity * 12 * d_model**2)
