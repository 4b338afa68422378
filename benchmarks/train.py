"""Training throughput: our trainer against a bare loop of the same model, dense and sparse.

Compares, in one run and on the same fixed batch:
  bare          forward, backward, AdamW step -- no masks, no clipping, no schedule, no logging
                (torch.optim.AdamW with its defaults: on CPU the per-tensor loop; ours uses the
                foreach kernels, so ours can come out slightly ahead of bare)
  ours dense    `mediswift.train.loop.train` (schedule, clipping, loss bookkeeping)
  ours s=75%    the same with static masks (gradients, weights and AdamW moments re-masked)
and reports tokens/s, each as a ratio to the bare loop, the cost of mask upkeep alone (the two
`torch._foreach_mul_` calls per step) as a fraction of a step, and the achieved model FLOP/s
(Hoffmann et al. FLOPs of the dense model: the hardware multiplies the zeros too) over the
measured matmul peak in the same dtype.

Expectation, written before measuring (CPU, 4 layers, d 256, seq 256, batch 8, vocab 8000):
ours dense within ~2% of bare (clipping is one extra pass over the gradients), mask upkeep
well under 1% of a step (two elementwise passes over 3M weights against ~60 GFLOP of matmuls),
and ~65-70% of the fp32 matmul peak (the small d=256 matmuls and attention fall short of a
2048^3 matmul). On a shared machine every number moves; the configurations are interleaved in
rounds and the median round is reported so that load hits all of them alike.

  python benchmarks/train.py                                    # the CPU configuration above
  python benchmarks/train.py --model med --dtype bf16 --device cuda --steps 20 --batch 8 \
      --seq-len 1024 --vocab 42384                              # MFU of MediSwift-Med on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import statistics
import time

import torch

from mediswift.config import PretrainConfig
from mediswift.flops import step_flops
from mediswift.model import GPT, model_config
from mediswift.peak import matmul_peak
from mediswift.sparsity import MaskedParams, make_masks
from mediswift.train.distributed import Dist
from mediswift.train.loop import LoopConfig, TrainState, train
from mediswift.train.optim import optimizer_for

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()


def build(args: argparse.Namespace, device: torch.device) -> GPT:
    torch.manual_seed(0)
    cfg = model_config(args.model, args.vocab, block_size=max(1024, args.seq_len))
    return GPT(cfg).to(device)


class Bare:
    """The obvious loop: what a person writes without masks, clipping or bookkeeping."""

    def __init__(self, args, device, batch):
        self.model, self.device, self.batch = build(args, device), device, batch
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=2e-4, fused=device.type == "cuda" or None
        )
        self.amp = DTYPES[args.dtype]

    def steps(self, n: int) -> None:
        x, y = self.batch[:, :-1], self.batch[:, 1:]
        for _ in range(n):
            with autocast(self.device, self.amp):
                _, loss = self.model(x, y)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)


class Ours:
    """`mediswift.train.loop.train`, resumed n steps at a time, optionally with static masks."""

    def __init__(self, args, device, batch, sparsity: float):
        self.model, self.device = build(args, device), device
        masks = make_masks(self.model, sparsity, seed=0)
        self.masked = MaskedParams(self.model, masks) if masks else None
        if self.masked:
            self.masked.apply_to_weights()
        self.opt = optimizer_for(self.model, PretrainConfig())  # the paper's AdamW
        self.batches = itertools.repeat(batch)
        self.state = TrainState()
        self.total = 10**9  # the schedule's horizon: the speed does not depend on it
        self.amp = DTYPES[args.dtype]

    def steps(self, n: int) -> None:
        cfg = dataclasses.replace(
            LoopConfig.from_settings(PretrainConfig(), amp_dtype=self.amp),
            steps=self.state.step + n,
            checkpoint_every=10**9,
        )
        self.state = train(
            self.model,
            self.opt,
            self.batches,
            cfg,
            Dist(device=self.device),
            self.state,
            self.masked,
        )


def time_upkeep(ours: Ours, n: int) -> float:
    """Seconds per step of mask upkeep alone (gradients, then weights and moments)."""
    m = ours.masked
    for p in m.params:  # the gradients exist after a step with set_to_none: give them back
        p.grad = torch.zeros_like(p)
    sync(ours.device)
    t = time.perf_counter()
    for _ in range(n):
        m.apply_to_grads()
        m.after_step(ours.opt)
    sync(ours.device)
    for p in m.params:
        p.grad = None
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="small")
    ap.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=4, help="steps per configuration per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    peak_dtype = DTYPES[args.dtype] or torch.float32
    peak = matmul_peak(device, peak_dtype)

    g = torch.Generator().manual_seed(0)
    batch = torch.randint(args.vocab, (args.batch, args.seq_len + 1), generator=g).to(device)
    runs = {
        "bare": Bare(args, device, batch),
        "ours dense": Ours(args, device, batch, 0.0),
        f"ours s={args.sparsity:.0%}": Ours(args, device, batch, args.sparsity),
    }
    for r in runs.values():  # warm-up: allocator, kernels, AdamW state
        r.steps(2)
    per_step: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, r in runs.items():
            sync(device)
            t = time.perf_counter()
            r.steps(args.steps)
            sync(device)
            per_step[name].append((time.perf_counter() - t) / args.steps)
    sparse = runs[f"ours s={args.sparsity:.0%}"]
    upkeep = statistics.median(time_upkeep(sparse, args.steps) for _ in range(args.rounds))

    cfg = runs["bare"].model.config
    flops = step_flops(cfg.n_layer, cfg.d_model, cfg.n_head, args.vocab, args.seq_len, args.batch)
    tokens = args.batch * args.seq_len
    bare_t = statistics.median(per_step["bare"])
    print(
        f"model {args.model} ({cfg.n_layer} layers, d {cfg.d_model}), seq {args.seq_len}, "
        f"batch {args.batch}, vocab {args.vocab}, {args.dtype} on {device} "
        f"({torch.get_num_threads()} threads), median of {args.rounds} rounds x {args.steps} steps"
    )
    print(
        f"measured {args.dtype} matmul peak: {peak / 1e9:,.1f} GFLOP/s; "
        f"model FLOPs per step: {flops / 1e9:,.2f} GFLOP"
    )
    print(f"{'':<14}{'s/step':>9}{'tokens/s':>11}{'vs bare':>9}{'GFLOP/s':>10}{'of peak':>9}")
    for name, times in per_step.items():
        t = statistics.median(times)
        print(
            f"{name:<14}{t:>9.4f}{tokens / t:>11,.0f}{bare_t / t:>8.3f}x"
            f"{flops / t / 1e9:>10,.1f}{flops / t / peak:>9.1%}"
        )
    sparse_t = statistics.median(per_step[f"ours s={args.sparsity:.0%}"])
    print(f"mask upkeep: {upkeep * 1e3:.2f} ms/step = {upkeep / sparse_t:.2%} of a sparse step")


if __name__ == "__main__":
    main()
