"""The machine's measured matmul peak: the denominator of achieved-FLOP/s fractions (MFU).

A square matmul large enough to reach the BLAS / tensor-core roofline is timed after a warm-up;
the best of a few repeats is the peak (2 n^3 FLOPs per product).
"""

from __future__ import annotations

import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    n: int | None = None,
    repeats: int = 5,
    min_seconds: float = 0.2,
) -> float:
    """Measured FLOP/s of an n x n @ n x n matmul in `dtype` on `device` (best of `repeats`)."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    flops = 2.0 * n**3
    a @ b  # warm-up (kernel selection, thread pool)
    _sync(device)
    # Calibrate the number of products per timing so each repeat lasts about min_seconds.
    t = time.perf_counter()
    a @ b
    _sync(device)
    per = max(time.perf_counter() - t, 1e-6)
    iters = max(1, int(min_seconds / per))
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(iters):
            a @ b
        _sync(device)
        best = max(best, flops * iters / (time.perf_counter() - t))
    return best
