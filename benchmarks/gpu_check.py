"""The GPU path, checked once on one CUDA device: what the CPU tests cannot show.

One run (about 5 minutes on a recent data-centre GPU; a time budget skips what would not fit in
8) prints one table:
  mfu        MediSwift-Med, seq 1024, micro-batch 8, bf16 autocast, through the trainer's own
             loop (`mediswift.train.loop.train`, AdamW as the recipe builds it): tokens/s and
             model FLOP/s over the measured bf16 matmul peak (MFU), dense and 75% static
             sparsity (the hardware multiplies the masked zeros: MFU counts dense FLOPs), each
             with `torch.compile` off and on (compile time reported apart)
  adamw      the optimizer the recipe builds on CUDA is the fused kernel; one step of it
             against the foreach one over the same Med parameters
  resume     `run_variant` on CUDA (bf16, fused AdamW, CUDA RNG in the checkpoint): 6 steps in
             one go, against 3 steps + a resume from the step-3 checkpoint; the curves and the
             final weights compared bit for bit
  2:4        `torch.sparse.to_sparse_semi_structured` (cuSPARSELt or CUTLASS): a 2:4-pruned
             weight times the activations of every matmul shape of the model, against the same
             dense product (speed-up, and the largest difference in the output). 2:4 is 50%
             structured sparsity; the paper's 75% unstructured masks have no such kernel.
  semi24     training steps of `pretrain.sparsity_method: semi24` (2:4 masks, forward products on
             the semi-structured kernels, backward dense) against dense and against the same
             masks on dense kernels, through the trainer's loop, eager
  spmm       `benchmarks/sparse_matmul.py` on this GPU: dense, cuSPARSE CSR and BSR, and 2:4 at
             50%, on the Med and XL shapes and the paper's 12k x 12k (the paper's Figure 3)

Expectations, written before running: MFU of the eager dense Med step ~35-50% of the measured
peak (24 layers of d 1024 are small matmuls for a large GPU), compile +10-30%; sparse within a
few % of dense (mask upkeep is three elementwise passes); fused AdamW faster than foreach;
resume bit-exact unless a kernel is nondeterministic (then the table says by how much); 2:4
speed-ups of ~1.1-1.6x on the large MLP matmuls and less, or none, on d x d; a semi24 training
step at best ~5-10% faster than dense (only the forward third of the matmul FLOPs can gain, and
the weights are compressed again after every optimizer step), possibly slower; CSR behind dense
below ~95% sparsity.

  python benchmarks/gpu_check.py               # on a machine with a CUDA device
  python benchmarks/gpu_check.py --dry-run     # anywhere: the plan, shapes and FLOPs only
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from mediswift.config import PretrainConfig
from mediswift.flops import step_flops
from mediswift.model import GPT, model_config
from mediswift.model.gpt import GPTConfig

BUDGET_S = 8 * 60


@dataclass
class Row:
    check: str
    setting: str
    result: str
    note: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="med", help="size of the MFU and 2:4 checks")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=8, help="sequences per step (one micro-batch)")
    ap.add_argument("--vocab", type=int, default=42384, help="the paper's vocabulary size")
    ap.add_argument("--sparsity", type=float, default=0.75)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per MFU configuration")
    ap.add_argument("--resume-model", default="small", help="size of the resume check")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled runs")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds; later checks skip")
    ap.add_argument("--spmm-plot", default="sparse_matmul_gpu.png", help="the spmm check's plot")
    ap.add_argument("--only", help="comma-separated checks to run (default: all)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan; needs no GPU")
    return ap.parse_args(argv)


def matmul_shapes(cfg: GPTConfig, tokens: int) -> list[tuple[str, int, int, int]]:
    """(name, M tokens, K in, N out) of every distinct weight matmul of a block, as
    `F.linear(x (M, K), W (N, K))`: q/k/v/o are d x d, the MLP d -> 4d -> d."""
    d = cfg.d_model
    return [
        ("attn q/k/v/o", tokens, d, d),
        ("mlp fc", tokens, d, cfg.d_ff),
        ("mlp proj", tokens, cfg.d_ff, d),
    ]


def mfu_configs(args: argparse.Namespace) -> list[tuple[float, bool]]:
    """(sparsity, compiled) of each MFU measurement."""
    compiles = [False] if args.no_compile else [False, True]
    return [(s, c) for c in compiles for s in (0.0, args.sparsity)]


def plan(args: argparse.Namespace) -> list[str]:
    """What a run measures: CPU-only, so --dry-run (and a test) can check it anywhere."""
    cfg = model_config(args.model, args.vocab, max(1024, args.seq_len))
    flops = step_flops(cfg.n_layer, cfg.d_model, cfg.n_head, args.vocab, args.seq_len, args.batch)
    tokens = args.batch * args.seq_len
    lines = [
        f"model {args.model}: {cfg.n_layer} layers, d {cfg.d_model}, {cfg.n_head} heads, "
        f"vocab {args.vocab}; {tokens:,} tokens/step; {flops / 1e12:.2f} TFLOP/step",
    ]
    for s, c in mfu_configs(args):
        lines.append(f"mfu: sparsity {s:.0%}, compile {'on' if c else 'off'}, {args.steps} steps")
    lines.append("adamw: fused vs foreach step over the model's parameters")
    lines.append(f"resume: run_variant {args.resume_model}, 6 steps vs 3 + resume, bit for bit")
    for name, m, k, n in matmul_shapes(cfg, tokens):
        lines.append(f"2:4: {name}: ({m} x {k}) @ ({k} x {n})")
    lines.append(
        f"semi24: {args.model} training steps, dense vs 2:4 masks on dense and 2:4 kernels"
    )
    lines.append("spmm: sparse_matmul.py on cuda: med, xl and 12k x 12k at 0-95% sparsity")
    return lines


def require_cuda() -> torch.device:
    """The CUDA device, or a clear exit: every check here is about the GPU path."""
    if not torch.cuda.is_available():
        raise SystemExit(
            "gpu_check: no CUDA device here (torch "
            f"{torch.__version__}, CUDA build {torch.version.cuda}): run it on a GPU machine, "
            "or pass --dry-run to see the plan"
        )
    return torch.device("cuda", torch.cuda.current_device())


def sync() -> None:
    torch.cuda.synchronize()


def cuda_time(fn: Callable[[], object], reps: int = 20) -> float:
    """Median seconds of `fn` over `reps`, by CUDA events, after a warm-up."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


# --- MFU -----------------------------------------------------------------------------------------


def build_model(args: argparse.Namespace, device: torch.device) -> GPT:
    torch.manual_seed(0)
    return GPT(model_config(args.model, args.vocab, max(1024, args.seq_len))).to(device)


def trainer_steps(
    args: argparse.Namespace,
    device: torch.device,
    sparsity: float,
    compiled: bool,
    method: str = "static",
    kernels: bool = True,
):
    """A function running n steps of the trainer's loop on one fixed batch, and the model."""
    from mediswift.sparsity import PATTERNS, MaskedParams, make_masks, use_semi24_kernels
    from mediswift.train.distributed import Dist
    from mediswift.train.loop import LoopConfig, TrainState, train
    from mediswift.train.optim import optimizer_for

    model = build_model(args, device)
    masks = make_masks(model, sparsity, seed=0, pattern=PATTERNS.get(method))
    masked = MaskedParams(model, masks) if masks else None
    if masked:
        masked.apply_to_weights()
    swap = use_semi24_kernels(model, masks) if method == "semi24" and kernels else None
    if swap is not None and swap.swapped != len(masks):
        raise RuntimeError(f"{swap.swapped} of {len(masks)} layers on 2:4 kernels: {swap.why}")
    cfg = PretrainConfig()
    opt = optimizer_for(model, cfg)
    if swap is not None:
        swap.attach(opt)
    runner = torch.compile(model) if compiled else model
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(args.vocab, (args.batch, args.seq_len + 1), generator=g).to(device)
    batches = itertools.repeat(batch)
    state = TrainState()
    loop = LoopConfig.from_settings(cfg, amp_dtype=torch.bfloat16)

    def steps(n: int) -> float:
        nonlocal state
        run = dataclasses.replace(loop, steps=state.step + n, checkpoint_every=10**9)
        state = train(runner, opt, batches, run, Dist(device=device), state, masked)
        return float(state.curve[-1]["train_loss"])

    return steps, opt


def timed_steps(
    args: argparse.Namespace, steps: Callable[[int], float]
) -> tuple[float, float, float]:
    """(seconds per step, warm-up seconds, last loss) of `steps` after 2 warm-up steps."""
    sync()
    t = time.perf_counter()
    steps(2)  # warm-up (and compilation)
    sync()
    warm = time.perf_counter() - t
    t = time.perf_counter()
    loss = steps(args.steps)
    sync()
    return (time.perf_counter() - t) / args.steps, warm, loss


def check_semi24(args: argparse.Namespace, device: torch.device) -> list[Row]:
    if torch.cuda.get_device_capability(device) < (8, 0):
        return [Row("semi24", "-", "skipped", "needs compute capability 8.0 or newer")]
    runs = {
        "dense": dict(sparsity=0.0),
        "2:4 masks, dense kernels": dict(sparsity=0.5, method="semi24", kernels=False),
        "2:4 masks, 2:4 kernels": dict(sparsity=0.5, method="semi24", kernels=True),
    }
    rows, base = [], None
    for name, kw in runs.items():
        steps, _ = trainer_steps(args, device, compiled=False, **kw)  # type: ignore[arg-type]
        per, _, loss = timed_steps(args, steps)
        base = base or per
        tok = args.batch * args.seq_len / per
        note = f"loss {loss:.3f}" + ("" if math.isfinite(loss) else " NOT FINITE")
        rows.append(
            Row("semi24", f"{args.model} {name}", f"{tok:,.0f} tok/s, {base / per:.2f}x", note)
        )
        del steps
        torch.cuda.empty_cache()
    return rows


def check_spmm(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Figure 3 on this GPU (benchmarks/sparse_matmul.py), its table printed whole."""
    import importlib.util

    path = Path(__file__).with_name("sparse_matmul.py")
    spec = importlib.util.spec_from_file_location("sparse_matmul", path)
    smm = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["sparse_matmul"] = smm
    spec.loader.exec_module(smm)  # type: ignore[union-attr]
    budget = max(30.0, args.budget / 4)
    smm.main(
        [
            "--device",
            device.type,
            "--sizes",
            "med,xl",
            "--levels",
            "0,0.5,0.75,0.9,0.95",
            "--budget",
            str(budget),
            "--plot",
            args.spmm_plot,
        ]
    )
    return [Row("spmm", "med, xl, 12k x 12k", "table above", f"plot {args.spmm_plot}")]


def check_mfu(args: argparse.Namespace, device: torch.device, peak: float) -> list[Row]:
    cfg = model_config(args.model, args.vocab, max(1024, args.seq_len))
    flops = step_flops(cfg.n_layer, cfg.d_model, cfg.n_head, args.vocab, args.seq_len, args.batch)
    rows = []
    for sparsity, compiled in mfu_configs(args):
        steps, _ = trainer_steps(args, device, sparsity, compiled)
        per, warm, loss = timed_steps(args, steps)
        setting = f"{args.model} s={sparsity:.0%} compile {'on' if compiled else 'off'}"
        note = f"loss {loss:.3f}" + (f", compile+warm-up {warm:.0f}s" if compiled else "")
        if not math.isfinite(loss):
            note += " NOT FINITE"
        tok = args.batch * args.seq_len / per
        rows.append(Row("mfu", setting, f"{tok:,.0f} tok/s, MFU {flops / per / peak:.1%}", note))
        del steps  # the model and its optimizer state, before the next one is built
        torch.cuda.empty_cache()
    return rows


def check_adamw(args: argparse.Namespace, device: torch.device) -> list[Row]:
    from mediswift.train.optim import make_optimizer, optimizer_for

    model = build_model(args, device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    recipe = optimizer_for(model, PretrainConfig())
    fused = recipe.defaults.get("fused") is True
    kw = dict(lr=2e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    times = {}
    for name, flag in (("fused", True), ("foreach", False)):
        opt = make_optimizer(model, fused=flag, **kw)
        times[name] = cuda_time(opt.step, reps=10)
        del opt
    result = f"fused {times['fused'] * 1e3:.1f} ms, foreach {times['foreach'] * 1e3:.1f} ms"
    note = "the recipe's optimizer is fused" if fused else "THE RECIPE'S OPTIMIZER IS NOT FUSED"
    return [Row("adamw", f"{args.model} step", result, note)]


# --- Checkpoint and resume ------------------------------------------------------------------------


def resume_spec(args: argparse.Namespace, out: Path):
    from mediswift.train.pretrain import VariantSpec

    cfg = PretrainConfig(
        model=args.resume_model,
        seq_len=args.seq_len,
        block_size=max(1024, args.seq_len),
        global_batch=args.batch,
        micro_batch=args.batch,
        steps=6,
        log_every=1,
        eval_every=3,
        eval_batches=2,
        checkpoint_every=3,
        measure_peak=False,
        device="cuda",
        seed=0,
    )
    return VariantSpec(
        name=f"{args.resume_model}-s75",
        config=cfg.model_dump(mode="json"),
        sparsity=0.75,
        vocab_size=args.vocab,
        out_dir=str(out),
        data="synthetic",
    )


def check_resume(args: argparse.Namespace, root: Path) -> list[Row]:
    from mediswift.train import checkpoint as ckpt
    from mediswift.train.pretrain import run_variant

    run_variant(resume_spec(args, root / "full"))
    first = ckpt.list_checkpoints(root / "full" / "checkpoints")[0]
    shutil.copytree(first, root / "resumed" / "checkpoints" / first.name)
    run_variant(resume_spec(args, root / "resumed"))
    same_curve = (root / "full" / "curve.csv").read_text() == (
        root / "resumed" / "curve.csv"
    ).read_text()
    wa = ckpt.load_model(root / "full" / "final").state_dict()
    wb = ckpt.load_model(root / "resumed" / "final").state_dict()
    diff = max((wa[n] - wb[n]).abs().max().item() for n in wa)
    exact = same_curve and diff == 0
    result = "bit-exact" if exact else f"DIFFERS: curve equal {same_curve}, max |dw| {diff:.2e}"
    return [Row("resume", f"{args.resume_model} bf16, 6 vs 3+3 steps", result)]


# --- 2:4 semi-structured sparsity ------------------------------------------------------------------


def prune_2_4(w: torch.Tensor) -> torch.Tensor:
    """`w` with the 2 smallest-magnitude weights of every 4 along the input dimension zeroed."""
    groups = w.reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.abs().topk(2, dim=1).indices, True)
    return (groups * keep).reshape(w.shape)


def check_semi_structured(args: argparse.Namespace, device: torch.device) -> list[Row]:
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    if torch.cuda.get_device_capability(device) < (8, 0):
        return [Row("2:4", "-", "skipped", "needs compute capability 8.0 or newer")]
    cfg = model_config(args.model, args.vocab, max(1024, args.seq_len))
    rows = []
    for name, m, k, n in matmul_shapes(cfg, args.batch * args.seq_len):
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        w = prune_2_4(torch.randn(n, k, device=device, dtype=torch.bfloat16))
        for backend in ("cusparselt", "cutlass"):
            SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
            try:
                ws = to_sparse_semi_structured(w)
            except (RuntimeError, ValueError) as e:
                rows.append(Row("2:4", name, "unsupported", str(e).splitlines()[0][:60]))
                continue
            with torch.no_grad():
                dense_t = cuda_time(lambda x=x, w=w: F.linear(x, w))
                sparse_t = cuda_time(lambda x=x, ws=ws: F.linear(x, ws))
                err = (F.linear(x, ws) - F.linear(x, w)).abs().max().item()
            result = f"{dense_t / sparse_t:.2f}x ({dense_t * 1e3:.2f} -> {sparse_t * 1e3:.2f} ms)"
            setting = f"{backend} {name} ({m}x{k})@({k}x{n})"
            rows.append(Row("2:4", setting, result, f"max |diff| {err:.1e}"))
    SparseSemiStructuredTensor._FORCE_CUTLASS = False
    return rows


# --- Driver ---------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    widths = [max(len(getattr(r, f)) for r in rows) for f in ("check", "setting", "result")]
    for r in rows:
        print(
            f"{r.check:<{widths[0]}}  {r.setting:<{widths[1]}}  {r.result:<{widths[2]}}  {r.note}"
        )


def sections(args: argparse.Namespace, device: torch.device, peak: float, tmp: Path) -> Iterator:
    """(name, thunk) of each check, in order of importance for the time budget."""
    yield "mfu", lambda: check_mfu(args, device, peak)
    yield "semi24", lambda: check_semi24(args, device)
    yield "2:4", lambda: check_semi_structured(args, device)
    yield "spmm", lambda: check_spmm(args, device)
    yield "resume", lambda: check_resume(args, tmp)
    yield "adamw", lambda: check_adamw(args, device)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        print("\n".join(plan(args)))
        return 0
    device = require_cuda()
    start = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = True
    from mediswift.peak import matmul_peak

    peak = matmul_peak(device, torch.bfloat16)
    props = torch.cuda.get_device_properties(device)
    print(f"{props.name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"measured bf16 matmul peak: {peak / 1e12:,.0f} TFLOP/s", flush=True)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, thunk in sections(args, device, peak, Path(tmp)):
            if args.only and name not in args.only.split(","):
                continue
            if time.perf_counter() - start > args.budget:
                rows.append(Row(name, "-", "skipped", "time budget spent"))
                continue
            t = time.perf_counter()
            try:
                rows.extend(thunk())
            except Exception as e:  # one failing check must not hide the others' figures
                rows.append(Row(name, "-", "FAILED", f"{type(e).__name__}: {e}"[:120]))
            print(f"{name}: {time.perf_counter() - t:.0f}s", file=sys.stderr, flush=True)
            with contextlib.suppress(RuntimeError):
                torch.cuda.empty_cache()
    print_table(rows)
    print(f"total {time.perf_counter() - start:.0f}s")
    bad = ("FAILED", "DIFFERS", "NOT FINITE", "NOT FUSED")
    return 1 if any(b in f"{r.result} {r.note}" for r in rows for b in bad) else 0


if __name__ == "__main__":
    raise SystemExit(main())
