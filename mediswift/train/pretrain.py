"""Pre-train one model variant end to end: model + masks, loader, loop, checkpoints, metrics.

`run_variant(spec)` is the whole job of one Prefect task. It runs in-process for one process and
under torchrun for several (`python -m torch.distributed.run --nproc-per-node N -m
mediswift.train.pretrain --spec spec.json`); every rank runs the same code, rank 0 alone writes
checkpoints, the loss curve, metrics and the variant's record (`manifest.json`).

A variant's directory (`spec.out_dir`) holds:
  checkpoints/step_<n>/   periodic resumable checkpoints (the newest `keep_checkpoints`)
  final/                  the trained weights + masks + config (what fine-tuning loads)
  curve.csv               step,train_loss,val_loss,lr
  metrics.jsonl           every logged metric (rank 0), forwarded live to a sink (MLflow)
  manifest.json           the variant's record, written last: the unit artifact is done
A run that finds checkpoints resumes from the newest whole one (a damaged one is set aside); one
that finds a readable manifest.json is done; a NaN or Inf loss stops the run before its next save.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import json
import math
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from mediswift import interrupt
from mediswift.artifacts import manifest_done, write_atomic
from mediswift.flops import step_flops, training_flops
from mediswift.lock import home_lock
from mediswift.model.gpt import GPT, model_config
from mediswift.sections import PretrainConfig
from mediswift.sparsity import (
    FIXED_LEVELS,
    METHODS,
    PATTERNS,
    DynamicSparsity,
    MaskCounts,
    MaskedParams,
    Semi24Kernels,
    count_active,
    make_masks,
    use_semi24_kernels,
)
from mediswift.text.token_shards import verify_token_shard
from mediswift.train import checkpoint as ckpt
from mediswift.train.distributed import Dist, barrier, init_distributed, shutdown, wrap_model
from mediswift.train.launch import Launch, launch_for, node_command, torchrun_command, unit_key
from mediswift.train.loop import Hooks, LoopConfig, TrainState, evaluate, train
from mediswift.train.metrics import JsonlMetrics, MetricSink, read_metrics
from mediswift.train.optim import optimizer_for
from mediswift.train.state import (
    DynamicSparsityState,
    LoaderState,
    MaskState,
    ModelState,
    OptimizerState,
    ProgressState,
    RNGState,
    Stateful,
    TrainCheckpoint,
)
from mediswift.train.variant import (
    VARIANT_MANIFEST,
    VariantSpec,
    make_train_loader,
    make_val_batches,
)


def run_variant(spec: VariantSpec, sink: MetricSink | None = None) -> dict[str, Any]:
    """Train (or resume, or just return) the variant; returns its record on every rank.

    Rank 0 writes metrics to `<out_dir>/metrics.jsonl` and forwards them to `sink`.
    """
    out = Path(spec.out_dir)
    if manifest_done(out / VARIANT_MANIFEST):
        return read_record(out)
    cfg = spec.cfg
    d = init_distributed(cfg.device)
    try:
        with _unit_lock(out, d):
            return _run(spec, cfg, d, out, sink)
    finally:
        shutdown(d)


# How long a new writer waits for one still writing the unit (a killed run's workers that have
# not yet seen their parent die: they poll for it, so seconds).
UNIT_LOCK_WAIT_S = 120.0


def _unit_lock(out: Path, d: Dist) -> contextlib.AbstractContextManager:
    """One writer per variant folder, on any home: the process writing the checkpoints (rank 0)
    holds `<out>/.lock`, so a re-run started while a killed run's workers are still dying waits
    for them instead of writing the same checkpoints."""
    if not d.is_main:
        return contextlib.nullcontext()
    note = functools.partial(print, flush=True)
    return home_lock(out, wait_s=UNIT_LOCK_WAIT_S, on_wait=note, what="pre-training unit")


def launch_variant(
    spec: VariantSpec,
    nproc: int | None = None,
    sink: MetricSink | None = None,
    timeout: float | None = None,
    *,
    nnodes: int | None = None,
    rdzv_endpoint: str | None = None,
    rdzv_id: str | None = None,
) -> dict[str, Any]:
    """Run the variant in this process (one process in all) or as this node's torchrun part.

    The launch settings left None come from the spec's settings (`mediswift.train.launch`);
    several nodes meet at a c10d rendezvous, and each of the others runs the command this
    prints. Under torchrun the children write metrics.jsonl; it is replayed into `sink` after.
    """
    launch = launch_for(
        spec.cfg,
        unit_key(spec.out_dir),
        nproc=nproc,
        nnodes=nnodes,
        rdzv_endpoint=rdzv_endpoint,
        rdzv_id=rdzv_id,
    )
    if launch.in_process:
        return run_variant(spec, sink)
    out = Path(spec.out_dir)
    if not manifest_done(out / VARIANT_MANIFEST):  # a done one must not wait at a rendezvous
        # Checked here too: a damaged shard is then named in the run's one error line, not
        # only in a child process's log behind "torchrun exited with 1".
        for shard in spec.train_shards + spec.val_shards:
            verify_token_shard(Path(shard))
        _torchrun(spec, launch, out, timeout)
    if sink is not None and (out / "metrics.jsonl").is_file():
        for step, metrics in read_metrics(out / "metrics.jsonl"):
            sink.log_metrics(metrics, step)
        sink.flush()
    return read_record(out)


def _torchrun(spec: VariantSpec, launch: Launch, out: Path, timeout: float | None) -> None:
    """Write the spec beside the variant's outputs and run this node's torchrun to its end."""
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    write_atomic(spec_file, spec.to_json())
    cmd = torchrun_command(launch, spec_file)
    if launch.multi_node:
        print(
            f"{spec.name}: this node joins the {launch.nnodes}-node rendezvous at "
            f"{launch.rdzv_endpoint} (id {launch.rdzv_id}); on each other node run: "
            f"{node_command(launch, spec_file)}",
            flush=True,
        )
    # Its own process group, tied to this process: a stop request or this process's death
    # (SIGKILL included) takes the agent and its workers with it.
    status = interrupt.run_child(cmd, timeout=timeout)
    if status != 0:
        raise RuntimeError(f"{spec.name}: torchrun exited with {status} ({' '.join(cmd)})")


def variant_params(spec: VariantSpec) -> dict[str, Any]:
    """What a tracking run records as parameters: the config, sparsity, method, FLOPs, sizes."""
    cfg = spec.cfg
    with torch.device("meta"):  # shapes only: no memory, no init
        model = GPT(model_config(cfg.model, spec.vocab_size, cfg.block_size))
    zeros = sum(round(spec.sparsity * model.get_parameter(n).numel()) for n in model.matrix_names())
    total, non_emb = model.num_params(), model.num_params(non_embedding=True)
    tokens = cfg.steps * cfg.global_batch * cfg.seq_len
    flops = training_flops_for(cfg, spec, tokens)
    return {
        "config": cfg.model_dump(mode="json"),
        "model": cfg.model,
        "sparsity": spec.sparsity,
        "method": cfg.sparsity_method if spec.sparsity > 0 else "static",
        "vocab_size": spec.vocab_size,
        "train_flops": flops,
        "flops_ratio": flops / training_flops_for(cfg, spec, tokens, dense=True),
        "total_params": total,
        "non_embedding_params": non_emb,
        "active_params": total - zeros,
        "active_non_embedding_params": non_emb - zeros,
    }


# --- One variant's run: setup -> build -> fit --------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """How this process trains, decided before anything is built."""

    d: Dist
    grad_accum: int  # micro-batches per optimizer step on each rank
    method: str  # static, set, rigl or semi24
    sharded: bool  # FSDP across processes: every rank takes part in gathering state
    amp: torch.dtype | None  # autocast dtype (bf16 on CUDA)


@dataclass
class Run:
    """What training needs, built (and, when resuming, restored from a checkpoint)."""

    model: GPT  # the bare model
    wrapped: nn.Module  # what runs the forward pass: DDP/FSDP/compiled around `model`
    masked: MaskedParams
    dynamic: DynamicSparsity | None
    optimizer: torch.optim.Optimizer
    loader: Any  # resumable iterator of (micro_batch, seq_len + 1) rows
    val_batches: list[torch.Tensor]
    state: TrainState
    checkpoint: TrainCheckpoint  # the named parts above, as one checkpoint
    counts: MaskCounts


def _run(
    spec: VariantSpec, cfg: PretrainConfig, d: Dist, out: Path, sink: MetricSink | None
) -> dict[str, Any]:
    env = _setup(spec, cfg, d)
    run = _build(spec, cfg, env)
    _resume(spec, run, out / "checkpoints", d)
    metrics = None
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        metrics = JsonlMetrics(out / "metrics.jsonl", run.state.step, sink)
    _fit(spec, cfg, env, run, out, metrics)
    run.checkpoint.save(out / "final", only=("model", "masks"))  # every rank: FSDP gathers
    record: dict[str, Any] = {}
    if d.is_main:
        record = _finish(spec, cfg, run, out, env.method, metrics)  # type: ignore[arg-type]
    barrier(d)
    return record if d.is_main else read_record(out)


def _resume(spec: VariantSpec, run: Run, root: Path, d: Dist) -> Path | None:
    """Restore the newest checkpoint under `root` that is whole; returns it (None: a fresh run).

    A damaged one (a file cut short, a flipped bit) is set aside with one line naming its bad
    file, and the one before it is tried: a run neither trains on damaged state nor fails on it
    at every start. Damage is found while reading, before any part is restored, so a checkpoint
    that fails leaves the built run as it was."""
    damaged: list[tuple[Path, ckpt.DamagedCheckpoint]] = []
    resumed = None
    for path in reversed(ckpt.list_checkpoints(root)):
        try:
            run.checkpoint.load(path)
        except ckpt.DamagedCheckpoint as e:
            damaged.append((path, e))
            continue
        resumed = path
        break
    barrier(d)  # every rank is done reading before rank 0 renames
    if d.is_main:
        for path, err in damaged:
            bad = ckpt.set_aside(path)
            print(f"{spec.name}: damaged checkpoint set aside as {bad.name} ({err})", flush=True)
        if resumed is not None:
            print(f"{spec.name}: resuming from {resumed} (step {run.state.step})", flush=True)
    return resumed


def _setup(spec: VariantSpec, cfg: PretrainConfig, d: Dist) -> Setup:
    """Check what depends on this launch (its process count, this variant's sparsity), set the
    numerics (threads, TF32) and seed every RNG that building the model draws from."""
    grad_accum = cfg.grad_accum(d.world_size)
    method = cfg.sparsity_method if spec.sparsity > 0 else "static"
    if method in FIXED_LEVELS and spec.sparsity != FIXED_LEVELS[method]:
        raise ValueError(f"{method} sparsity is {FIXED_LEVELS[method]}, not {spec.sparsity}")
    if cfg.fsdp and METHODS[method] is not None:
        raise ValueError("dynamic sparsity (set/rigl) needs whole matrices: not with fsdp")
    on_gpu = d.device.type == "cuda"
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    # The same seed on every rank gives the same initial weights and masks.
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    return Setup(
        d=d,
        grad_accum=grad_accum,
        method=method,
        sharded=cfg.fsdp and d.enabled,
        amp=torch.bfloat16 if on_gpu else None,
    )


def _build(spec: VariantSpec, cfg: PretrainConfig, env: Setup) -> Run:
    """The model with its masks, wrapped for the processes; the optimizer, dynamic sparsity,
    loaders and train state; and the checkpoint made of them. Nothing is loaded here: resuming
    restores the checkpoint into what this builds."""
    d = env.d
    model = GPT(model_config(cfg.model, spec.vocab_size, cfg.block_size, cfg.dropout))
    masks = make_masks(model, spec.sparsity, seed=cfg.seed, pattern=PATTERNS.get(env.method))
    counts = count_active(model, masks)
    model.to(d.device)
    masked = MaskedParams(model, masks)
    masked.apply_to_weights()
    kernels = None
    if env.method == "semi24" and d.device.type == "cuda" and cfg.semi24_kernels:
        kernels = _semi24_kernels(spec, cfg, model, masks, d)
    wrapped = torch.compile(model) if cfg.compile else model
    wrapped = wrap_model(wrapped, d, fsdp=cfg.fsdp)  # type: ignore[arg-type]
    if env.sharded:
        masked = MaskedParams(wrapped, masks)  # bind to the sharded parameters
    optimizer = optimizer_for(wrapped, cfg)
    if kernels is not None:
        kernels.attach(optimizer)  # compress the weights once per step
    build_rule = METHODS[env.method]  # the mask-update rule of dynamic methods
    dynamic = build_rule(masked, cfg) if build_rule is not None else None
    loader = make_train_loader(spec, d)
    state = TrainState()
    parts: dict[str, Stateful] = {
        "progress": ProgressState(state),
        "model": ModelState(wrapped, d, env.sharded),
        "masks": MaskState(masked, d),
        "optimizer": OptimizerState(wrapped, optimizer, d, env.sharded),
        "loader": LoaderState(loader, d),
        "rng": RNGState(d),
    }
    if dynamic is not None:
        parts["dynamic"] = DynamicSparsityState(dynamic, d)
    return Run(
        model=model,
        wrapped=wrapped,
        masked=masked,
        dynamic=dynamic,
        optimizer=optimizer,
        loader=loader,
        val_batches=make_val_batches(spec, d),
        state=state,
        checkpoint=TrainCheckpoint(model.config, d, parts),
        counts=counts,
    )


def _semi24_kernels(
    spec: VariantSpec, cfg: PretrainConfig, model: GPT, masks: dict[str, torch.Tensor], d: Dist
) -> Semi24Kernels | None:
    """The forward products of 2:4 layers on the GPU's semi-structured kernels, where they apply
    (not under FSDP, whose shards split the groups, nor torch.compile, which would trace the
    swapped forward)."""
    if cfg.fsdp or cfg.compile:
        swapped, why = 0, "not with fsdp or compile"
    else:
        swapped, why = use_semi24_kernels(model, masks)
    if d.is_main:
        note = f" ({why})" if why else ""
        print(
            f"{spec.name}: {swapped} of {len(masks)} 2:4 layers on sparse kernels{note}", flush=True
        )


def _fit(
    spec: VariantSpec,
    cfg: PretrainConfig,
    env: Setup,
    run: Run,
    out: Path,
    metrics: JsonlMetrics | None,
) -> TrainState:
    """Train from `run.state` to `cfg.steps`: evaluating, logging and checkpointing on the way."""
    d = env.d

    def val_loss() -> float:
        return evaluate(run.wrapped, run.val_batches, d, env.amp)

    def save(st: TrainState) -> None:
        root = out / "checkpoints"
        if run.checkpoint.save(ckpt.step_dir(root, st.step)) is None:
            return  # not rank 0
        ckpt.prune_checkpoints(root, cfg.keep_checkpoints)
        _write_curve(out / "curve.csv", st.curve)
        if metrics is not None:
            metrics.flush()

    def log(step: int, row: dict[str, float]) -> None:
        # Cumulative training FLOPs (the record's accounting) at this step: the x axis against
        # which the UI can chart the losses of variants of different sparsity.
        row = {**row, "train_flops": training_flops_for(cfg, spec, row["tokens"])}
        metrics.log_metrics(row, step)  # type: ignore[union-attr]
        if step % (cfg.log_every * 10) == 0 or step == cfg.steps or "val_loss" in row:
            val = f" val {row['val_loss']:.4f}" if "val_loss" in row else ""
            print(
                f"{spec.name}: step {step}/{cfg.steps} loss {row['train_loss']:.4f}{val} "
                f"lr {row['lr']:.2e} {row['tokens_per_s']:,.0f} tok/s",
                flush=True,
            )

    mc = run.model.config
    # What the dense hardware executes per step (masked zeros are still multiplied).
    flops = step_flops(
        mc.n_layer, mc.d_model, mc.n_head, spec.vocab_size, cfg.seq_len, cfg.global_batch, 0.0
    )
    peak = None
    if cfg.measure_peak and d.is_main:
        from mediswift.peak import matmul_peak

        peak = matmul_peak(d.device, env.amp or torch.float32)
    return train(
        run.wrapped,
        run.optimizer,
        iter(run.loader),
        LoopConfig.from_settings(cfg, env.grad_accum, env.amp, name=spec.name),
        d,
        run.state,
        run.masked,
        run.dynamic,
        Hooks(evaluate=val_loss, checkpoint=save, log=log if d.is_main else None),
        flops_per_step=flops,
        peak_flops=peak,
    )


def training_flops_for(
    cfg: PretrainConfig, spec: VariantSpec, tokens: float, dense: bool = False
) -> float:
    m = model_config(cfg.model, spec.vocab_size, cfg.block_size)
    return training_flops(
        m.n_layer,
        m.d_model,
        m.n_head,
        spec.vocab_size,
        cfg.seq_len,
        tokens,
        0.0 if dense else spec.sparsity,
    ).total


def _write_curve(path: Path, rows: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["step", "train_loss", "val_loss", "lr"])
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if v is None else repr(v) for k, v in r.items()})
    write_atomic(path, buf.getvalue())


def _finish(
    spec: VariantSpec,
    cfg: PretrainConfig,
    run: Run,
    out: Path,
    method: str,
    metrics: JsonlMetrics,
) -> dict[str, Any]:
    """Rank 0, after the final weights are saved: the curve, the last metrics and the record."""
    state = run.state
    _write_curve(out / "curve.csv", state.curve)
    last_val = next(
        (r["val_loss"] for r in reversed(state.curve) if r["val_loss"] is not None), float("nan")
    )
    flops = training_flops_for(cfg, spec, state.tokens)
    record = {
        "name": spec.name,
        "model": cfg.model,
        "sparsity": spec.sparsity,
        "method": method,
        "checkpoint": "final",  # relative to the variant's directory: a home can move
        **asdict(run.counts),
        "train_flops": flops,
        "flops_ratio": flops / training_flops_for(cfg, spec, state.tokens, dense=True),
        "final_train_loss": state.curve[-1]["train_loss"] if state.curve else float("nan"),
        "final_val_loss": last_val,
        "val_ppl": math.exp(last_val) if not math.isnan(last_val) else float("nan"),
        "tokens": state.tokens,
        "steps": state.step,
        "loss_curve": "curve.csv",
        **checkpoint_sizes(out),
    }
    # train_flops at this step came with the last step's row: logging it again would repeat it.
    metrics.log_metrics({"final_val_loss": last_val}, state.step)
    metrics.flush()
    write_atomic(out / VARIANT_MANIFEST, json.dumps(record, indent=2) + "\n")
    return _absolute(record, out)


def checkpoint_sizes(out: Path) -> dict[str, int | None]:
    """Bytes on disk of the variant's final checkpoint (weights and masks) and of its newest
    resumable one (with the AdamW moments, RNG and loader state; None when none is kept)."""
    newest = ckpt.latest_checkpoint(out / "checkpoints")
    return {
        "checkpoint_bytes": ckpt.checkpoint_bytes(out / "final"),
        "resume_checkpoint_bytes": ckpt.checkpoint_bytes(newest) if newest else None,
    }


def _absolute(record: dict[str, Any], out: Path) -> dict[str, Any]:
    """The record with its file fields resolved against the variant directory `out` (the
    stored record keeps them relative, so the home can be moved)."""
    for name in ("checkpoint", "loss_curve"):
        if name in record and not Path(record[name]).is_absolute():
            record[name] = str(out / record[name])
    return record


def read_record(out: Path) -> dict[str, Any]:
    return _absolute(json.loads((out / VARIANT_MANIFEST).read_text()), out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pre-train one MediSwift variant (torchrun entry)")
    ap.add_argument("--spec", required=True, help="VariantSpec JSON file")
    args = ap.parse_args(argv)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker dies with its agent
        interrupt.die_with_parent(os.getppid())
    spec = VariantSpec.from_json(Path(args.spec).read_text())
    record = run_variant(spec)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: record[k] for k in ("name", "steps", "final_val_loss")}))
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # Everything is written and the process group destroyed; the interpreter's own
        # teardown can still abort a gloo worker ("terminate called without an active
        # exception", in about 1 of 10 two-process runs on CPU), which torchrun reports as a
        # failed variant. A finished worker leaves without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
