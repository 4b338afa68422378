"""Training FLOPs after Hoffmann et al. (2022), Appendix F, with weight sparsity applied.

Forward FLOPs of one sequence of length T (d = d_model, V = vocabulary, h heads of size k, L layers,
d_ff = 4 d), each multiply-add counted as 2 FLOPs:
  embeddings           2 T V d
  per layer, attention QKV projections        2 * 3 T d (h k)
                       Q K^T logits           2 T T (h k)
                       softmax                3 h T T
                       softmax @ V reduction  2 T T (h k)
                       output projection      2 T (h k) d
  per layer, dense block                      2 T (d d_ff + d_ff d)
  final logits         2 T d V
The backward pass costs twice the forward pass.

Sparsity at level s multiplies the FLOPs of the six sparsified matrices (QKV, output projection,
both dense-block matrices) by (1 - s): unstructured sparsity skips the multiplications by zero
weights (what the paper's hardware does). Attention logits, softmax, reduction and the embeddings
stay dense.

Embedding convention (derived from Table 6): the input embedding is counted as a matmul (2 T V d
forward, per Appendix F) but its backward pass only computes the weight gradient -- there is no
gradient with respect to the one-hot input -- so it costs 1x, not 2x, its forward. The output
logits cost forward + 2x backward. Per sequence:
  train = 3 * (L * layer + logits) + 2 * embeddings.
With 104.86e9 tokens, V = 42,384 and T = 1024 this reproduces all nine rows of Table 6 within
0.22% (counting the embeddings 3x + 3x instead overshoots by 2-7.6%; leaving the input embedding
out entirely undershoots by 4-15%), see tests/test_flops.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediswift.model.sizes import size as model_size


@dataclass(frozen=True)
class FlopsBreakdown:
    """Training FLOPs (forward + backward) for the whole run, by component."""

    embeddings: float  # input embedding, forward + weight gradient
    logits: float  # output layer
    attention_matrices: float  # QKV + output projection (sparsified)
    attention_scores: float  # logits, softmax, reduction (dense)
    dense_block: float  # MLP fc + proj (sparsified)

    @property
    def total(self) -> float:
        return (
            self.embeddings
            + self.logits
            + self.attention_matrices
            + self.attention_scores
            + self.dense_block
        )


def training_flops(
    n_layer: int,
    d_model: int,
    n_head: int,
    vocab_size: int,
    seq_len: int,
    tokens: float,
    sparsity: float = 0.0,
    d_ff: int | None = None,
) -> FlopsBreakdown:
    """Training FLOPs for `tokens` tokens in sequences of `seq_len` at uniform `sparsity`."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity {sparsity} must be in [0, 1)")
    T, d, V, h, L = seq_len, d_model, vocab_size, n_head, n_layer
    hk = d  # key_size * num_heads; d_model for every MediSwift size
    ff = d_ff if d_ff is not None else 4 * d
    density = 1.0 - sparsity
    sequences = tokens / T

    embed_fwd = 2 * T * V * d
    qkv = 2 * 3 * T * d * hk
    scores = 2 * T * T * hk + 3 * h * T * T + 2 * T * T * hk
    proj = 2 * T * hk * d
    dense = 2 * T * (d * ff + ff * d)
    logits_fwd = 2 * T * d * V

    fwd_bwd = 3.0  # forward + backward (2x forward)
    return FlopsBreakdown(
        embeddings=2.0 * embed_fwd * sequences,  # forward + weight-gradient only
        logits=fwd_bwd * logits_fwd * sequences,
        attention_matrices=fwd_bwd * L * (qkv + proj) * density * sequences,
        attention_scores=fwd_bwd * L * scores * sequences,
        dense_block=fwd_bwd * L * dense * density * sequences,
    )


def flops_for(
    size: str,
    sparsity: float,
    tokens: float,
    vocab_size: int = 42_384,
    seq_len: int = 1024,
) -> float:
    """Total training FLOPs of a named model size (see `mediswift.model.sizes`)."""
    s = model_size(size)
    return training_flops(
        s.n_layer, s.d_model, s.n_head, vocab_size, seq_len, tokens, sparsity
    ).total


def main_flops(
    model: str, sparsity: float, tokens: float, vocab_size: int = 42_384, seq_len: int = 1024
) -> float:
    """What `mediswift flops --model M --sparsity S --tokens N` prints (returns, prints nothing)."""
    return flops_for(model, sparsity, float(tokens), vocab_size=vocab_size, seq_len=seq_len)


def step_flops(
    n_layer: int,
    d_model: int,
    n_head: int,
    vocab_size: int,
    seq_len: int,
    batch: int,
    sparsity: float = 0.0,
) -> float:
    """Model FLOPs of one training step on `batch` sequences (for achieved FLOP/s and MFU)."""
    return training_flops(
        n_layer, d_model, n_head, vocab_size, seq_len, float(batch * seq_len), sparsity
    ).total


def iso_flops_steps(
    model: str, sparsity: float, steps: int, vocab_size: int = 42_384, seq_len: int = 1024
) -> int:
    """Steps of a dense run of `model` whose training FLOPs equal `steps` of the `sparsity`
    variant (FLOPs grow linearly with steps): the iso-FLOPs dense baseline's length."""
    tokens = float(steps * seq_len)
    sparse = flops_for(model, sparsity, tokens, vocab_size, seq_len)
    dense = flops_for(model, 0.0, tokens, vocab_size, seq_len)
    return max(1, round(steps * sparse / dense))
