"""The paper's Figure 3 on this hardware: measured against theoretical speed-up of a
sparse-weight times dense-activation matmul, at sparsity 0-90%.

The paper measured a 12k x 12k sparse matrix times a dense one on the hardware it trained on
(Cerebras CS-2), whose speed-up follows 1 / (1 - s) closely. Here the weight is one of the
model's layer shapes, masked as the training masks it (random, unstructured), and multiplied by
`--tokens` activation columns: Y (N x M) = W (N x K) @ X (K x M). Kernels:
  dense      the masked weight as a dense tensor: the zeros are multiplied (what training does)
  csr        torch CSR @ dense (MKL's sparse BLAS on an x86 CPU, cuSPARSE on CUDA)
  bsr        torch BSR (32 x 32 blocks) @ dense at the same sparsity, on a *block* mask: not the
             model's pattern, it shows what block structure would buy
  scipy      scipy.sparse CSR @ numpy (CPU only; one thread)
  2:4        on CUDA at 50% only: `torch.sparse.to_sparse_semi_structured` (cuSPARSELt or CUTLASS)
             on a 2:4 mask, the pattern of `pretrain.sparsity_method: semi24`
Measured speed-up = dense time / kernel time, in the same run; theoretical = 1 / (1 - s).

Expectation, written before measuring (2-core x86 CPU, fp32, 512 columns): the dense product
runs near the matmul peak; MKL CSR is 5-10x slower than dense at 0%, its time falls about
linearly with the non-zeros, so it only breaks even around 85-95% and stays far below
1 / (1 - s) everywhere; BSR breaks even earlier (60-80%) since a block is a small dense
product; scipy (one thread, no blocking) is slower than MKL CSR. On a GPU (bf16): cuSPARSE CSR
loses to dense below ~95%; 2:4 gives ~1.1-1.6x on the large shapes at 50%. So unstructured
sparsity at 50-75% saves FLOPs but no time on the hardware users have: the paper's case for it
is hardware that skips zeros.

  python benchmarks/sparse_matmul.py                       # CPU: the table and a plot (PNG)
  python benchmarks/sparse_matmul.py --device cuda         # the same on a GPU, with 2:4
  python benchmarks/sparse_matmul.py --quick               # two shapes, four levels
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mediswift.model.sizes import SIZES
from mediswift.sparsity import random_mask, semi24_mask

LEVELS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9]
BLOCK = 32
PAPER_SHAPE = ("paper 12k x 12k", 12288, 12288)


@dataclass
class Row:
    shape: str
    sparsity: float
    kernel: str
    seconds: float | None  # None: the kernel does not apply or failed
    dense_seconds: float
    note: str = ""

    @property
    def speedup(self) -> float | None:
        return self.dense_seconds / self.seconds if self.seconds else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="med,large,xl", help="model sizes whose shapes to use")
    ap.add_argument("--tokens", type=int, help="activation columns (default 512 CPU, 8192 GPU)")
    ap.add_argument("--levels", default=",".join(map(str, LEVELS)))
    ap.add_argument("--no-paper", action="store_true", help="skip the 12k x 12k shape")
    ap.add_argument("--quick", action="store_true", help="two shapes, four levels")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds; later shapes skip")
    ap.add_argument("--plot", default="sparse_matmul.png", help="'' for no plot")
    return ap.parse_args(argv)


def shapes(args: argparse.Namespace) -> list[tuple[str, int, int]]:
    """(name, N out, K in) of the distinct weight shapes of each size, then the paper's."""
    out = []
    for size in args.sizes.split(","):
        d = SIZES[size].d_model
        out += [(f"{size} attn {d}x{d}", d, d), (f"{size} mlp {4 * d}x{d}", 4 * d, d)]
    if args.quick:
        out = out[:2]
    elif not args.no_paper:
        out.append(PAPER_SHAPE)
    return out


def levels(args: argparse.Namespace, shape: str) -> list[float]:
    """The levels measured; the paper's large shape gets four (its CSR products take seconds)."""
    if args.quick or (shape == PAPER_SHAPE[0] and args.device == "cpu"):
        return [0.0, 0.5, 0.75, 0.9]
    return [float(s) for s in args.levels.split(",")]


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Median seconds of a call: CUDA events on a GPU, wall clock on the CPU (after one warm-up
    call: at least 3 repetitions and about 0.3 s of them, or one when a call takes over 1 s)."""

    def cpu(fn: Callable[[], object]) -> float:
        t = time.perf_counter()
        fn()
        least = 1 if time.perf_counter() - t > 1.0 else 3
        times: list[float] = []
        while len(times) < least or (sum(times) < 0.3 and len(times) < 50):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def cuda(fn: Callable[[], object]) -> float:
        for _ in range(3):
            fn()
        times = []
        for _ in range(20):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        return statistics.median(times)

    return cuda if device.type == "cuda" else cpu


def block_mask(n: int, k: int, sparsity: float, gen: torch.Generator) -> torch.Tensor:
    """A mask that zeroes whole BLOCK x BLOCK tiles, round(s * tiles) of them."""
    tiles = random_mask((n // BLOCK, k // BLOCK), sparsity, gen)
    return tiles.repeat_interleave(BLOCK, 0).repeat_interleave(BLOCK, 1)


def kernels(
    w: torch.Tensor, x: torch.Tensor, s: float, gen: torch.Generator
) -> dict[str, Callable | str]:
    """name -> a function computing W @ X (or why it does not apply) for the masked `w`; `x` is
    the activations, for kernels that take them in another layout."""
    out: dict[str, Callable | str] = {}

    def guarded(name: str, build: Callable[[], Callable]) -> None:
        try:
            out[name] = build()
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as e:
            out[name] = f"unsupported: {str(e).splitlines()[0][:70]}"

    guarded("csr", lambda: lambda x, c=w.to_sparse_csr(): torch.sparse.mm(c, x))
    if w.shape[0] % BLOCK == 0 and w.shape[1] % BLOCK == 0:
        wb = w * block_mask(*w.shape, s, gen).to(w.device, w.dtype)
        guarded("bsr", lambda: lambda x, b=wb.to_sparse_bsr(BLOCK): b @ x)
    if w.device.type == "cpu":
        guarded("scipy", lambda: _scipy(w))
    elif s == 0.5:
        guarded("2:4", lambda: _semi24(w, x, gen))
    return out


def _scipy(w: torch.Tensor) -> Callable:
    import scipy.sparse

    c = scipy.sparse.csr_matrix(w.numpy())
    return lambda x: c @ x.numpy()


def _semi24(w: torch.Tensor, x: torch.Tensor, gen: torch.Generator) -> Callable:
    from torch.sparse import to_sparse_semi_structured

    m = semi24_mask(tuple(w.shape), gen).to(w.device)
    ws = to_sparse_semi_structured((w * m).contiguous())
    # F.linear(X^T, W) = (W @ X)^T: the layout a linear layer hands the kernels (transposed once
    # here, outside the timing, as activations arrive in it).
    xt = x.t().contiguous()
    return lambda _x: F.linear(xt, ws)


def measure(args: argparse.Namespace, device: torch.device) -> list[Row]:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    tokens = args.tokens or (8192 if device.type == "cuda" else 512)
    clock, start, rows = timer(device), time.perf_counter(), []
    for name, n, k in shapes(args):
        if time.perf_counter() - start > args.budget:
            rows.append(Row(name, 0.0, "all", None, 0.0, "skipped: time budget spent"))
            continue
        gen = torch.Generator().manual_seed(0)
        try:
            x = torch.randn(k, tokens, dtype=dtype, device=device)
            w0 = torch.randn(n, k, dtype=dtype, device=device)
        except (RuntimeError, MemoryError) as e:  # the paper's shape where memory is short
            rows.append(Row(name, 0.0, "all", None, 0.0, f"skipped: {str(e)[:60]}"))
            continue
        for s in levels(args, name):
            w = w0 * random_mask((n, k), s, gen).to(device, dtype)
            dense = clock(lambda w=w, x=x: w @ x)
            rows.append(Row(name, s, "dense", dense, dense))
            for kname, fn in kernels(w, x, s, gen).items():
                if isinstance(fn, str):
                    rows.append(Row(name, s, kname, None, dense, fn))
                    continue
                t = clock(lambda fn=fn, x=x: fn(x))
                rows.append(Row(name, s, kname, t, dense))
            print(f"{name} s={s:.0%} done ({time.perf_counter() - start:.0f}s)", flush=True)
    return rows


def table(rows: list[Row]) -> str:
    """Markdown: one line per shape and level, a speed-up column per kernel."""
    names = [k for k in ("csr", "bsr", "scipy", "2:4") if any(r.kernel == k for r in rows)]
    lines = [
        "| shape | sparsity | dense ms | theoretical | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    keyed = {(r.shape, r.sparsity, r.kernel): r for r in rows}
    for r in rows:
        if r.kernel == "all":
            lines.append(f"| {r.shape} | - | - | - | {r.note} |")
        if r.kernel != "dense":
            continue
        cells = []
        for k in names:
            hit = keyed.get((r.shape, r.sparsity, k))
            cells.append(f"{hit.speedup:.2f}x" if hit and hit.speedup else "-")
        lines.append(
            f"| {r.shape} | {r.sparsity:.0%} | {r.seconds * 1e3:.1f} | "  # type: ignore[operator]
            f"{1 / (1 - r.sparsity):.2f}x | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, title: str) -> None:
    """Figure 3's form: speed-up against sparsity, theoretical and measured, for the largest
    shape measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.kernel == "dense"]
    if not measured:
        return
    # The largest shape measured at every level (Figure 3 is one shape).
    full = max(len({(r.sparsity) for r in rows if r.shape == m.shape}) for m in measured)
    shape = [m for m in measured if len({r.sparsity for r in rows if r.shape == m.shape}) == full][
        -1
    ].shape
    levels_ = sorted({r.sparsity for r in rows if r.shape == shape})
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(levels_, [1 / (1 - s) for s in levels_], "k--", label="theoretical 1/(1-s)")
    for k in ("dense", "csr", "bsr", "scipy", "2:4"):
        pts = [(r.sparsity, r.speedup) for r in rows if r.shape == shape and r.kernel == k]
        pts = [(s, v) for s, v in pts if v]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", label=k)
    ax.set_yscale("log")
    ax.set_xlabel("weight sparsity")
    ax.set_ylabel("speed-up over dense")
    ax.set_title(f"{shape}: {title}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, bf16, torch {torch.__version__}"
    return f"{torch.get_num_threads()} CPU threads, fp32, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("sparse_matmul: no CUDA device here; run without --device cuda")
    rows = measure(args, device)
    print(f"\n{machine(device)}, {args.tokens or 'default'} columns")
    print(table(rows))
    if args.plot:
        plot(rows, Path(args.plot), machine(device))
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
