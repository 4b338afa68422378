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
A run that finds checkpoints resumes from the newest one; one that finds manifest.json is done.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from mediswift.artifacts import MANIFEST, write_atomic
from mediswift.flops import step_flops, training_flops
from mediswift.model.gpt import GPT, model_config
from mediswift.settings import PretrainConfig
from mediswift.sparsity import DynamicSparsity, MaskedParams, count_active, make_masks
from mediswift.train import checkpoint as ckpt
from mediswift.train.distributed import (
    Dist,
    barrier,
    gather_objects,
    init_distributed,
    shutdown,
    wrap_model,
)
from mediswift.train.loop import Hooks, LoopConfig, TrainState, evaluate, train
from mediswift.train.optim import make_optimizer

RECORD = MANIFEST  # the variant directory is a unit artifact: its record is its manifest


@dataclass
class VariantSpec:
    """Everything one variant needs; JSON-able so it can cross into torchrun processes."""

    name: str
    config: dict[str, Any]  # PretrainConfig as a dict
    sparsity: float
    vocab_size: int
    out_dir: str
    train_shards: list[str] = field(default_factory=list)
    val_shards: list[str] = field(default_factory=list)
    data: str = "shards"  # "shards" (token Parquet) or "synthetic" (benchmarks, trainer tests)

    @property
    def cfg(self) -> PretrainConfig:
        return PretrainConfig.model_validate(self.config)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> VariantSpec:
        return cls(**json.loads(text))


def variant_name(model: str, sparsity: float, method: str = "static") -> str:
    """tiny-dense, tiny-s50, xl-s75; dynamic methods append theirs (tiny-s75-rigl)."""
    if sparsity == 0:
        return f"{model}-dense"
    base = f"{model}-s{round(sparsity * 100)}"
    return base if method == "static" else f"{base}-{method}"


def make_train_loader(spec: VariantSpec, d: Dist) -> Iterator[torch.Tensor]:
    """This rank's endless, shuffled, resumable loader of (micro_batch, seq_len + 1) rows."""
    cfg = spec.cfg
    if spec.data == "synthetic":
        from mediswift.train.synthetic import SyntheticTokens

        return SyntheticTokens(
            spec.vocab_size, cfg.seq_len, cfg.micro_batch, d.rank, d.world_size, cfg.seed
        )
    if not spec.train_shards:
        raise ValueError(f"variant {spec.name}: no train token shards given")
    from mediswift.train.batches import TokenBatches  # owned by the tokenize stage

    return TokenBatches(
        spec.train_shards,
        cfg.seq_len,
        cfg.micro_batch,
        rank=d.rank,
        world_size=d.world_size,
        seed=cfg.seed,
        shuffle=True,
    )


def make_val_batches(spec: VariantSpec, d: Dist) -> list[torch.Tensor]:
    """This rank's share of the fixed validation batches (the same ones at every evaluation).

    The batches are one global list -- the first `eval_batches` batches of `micro_batch` rows in
    stream order -- dealt round-robin to the ranks, so the validation loss does not depend on the
    number of processes.
    """
    cfg = spec.cfg
    if spec.data == "synthetic":  # rows of a disjoint seed, so never training rows
        from mediswift.train.synthetic import SyntheticTokens

        rows = SyntheticTokens(
            spec.vocab_size, cfg.seq_len, cfg.micro_batch, seed=cfg.seed + 10_000
        )
        batches = [next(rows) for _ in range(cfg.eval_batches)]
    else:
        if not spec.val_shards:
            raise ValueError(f"variant {spec.name}: no validation token shards given")
        from mediswift.train.batches import fixed_batches

        batches = fixed_batches(spec.val_shards, cfg.seq_len, cfg.micro_batch, cfg.eval_batches)
    return batches[d.rank :: d.world_size]


class MetricSink(Protocol):
    """Where rank 0 sends metrics as they come (an MLflow `RunLogger` is one)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def flush(self) -> None: ...


class JsonlMetrics:
    """Metrics as JSON lines in the variant directory: always written, and how metrics of a
    torchrun job reach the parent process (which replays them into MLflow)."""

    def __init__(self, path: Path, resume_step: int = 0, forward: MetricSink | None = None):
        self.path, self.forward, self._rows = path, forward, []
        if path.is_file():  # a resumed run: drop what was logged after its checkpoint
            kept = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in kept if json.loads(ln)["step"] <= resume_step]
            write_atomic(path, "".join(ln + "\n" for ln in kept))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._rows.append(json.dumps({"step": step, **metrics}))
        if self.forward is not None:
            self.forward.log_metrics(metrics, step)

    def flush(self) -> None:
        if self._rows:
            with open(self.path, "a") as f:
                f.write("".join(r + "\n" for r in self._rows))
            self._rows = []
        if self.forward is not None:
            self.forward.flush()


def read_metrics(path: Path) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) rows of a variant's metrics.jsonl."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append((int(row.pop("step")), row))
    return rows


def run_variant(spec: VariantSpec, sink: MetricSink | None = None) -> dict[str, Any]:
    """Train (or resume, or just return) the variant; returns its record on every rank.

    Rank 0 writes metrics to `<out_dir>/metrics.jsonl` and forwards them to `sink`.
    """
    out = Path(spec.out_dir)
    if (out / RECORD).is_file():
        return json.loads((out / RECORD).read_text())
    cfg = spec.cfg
    d = init_distributed(cfg.device)
    try:
        return _run(spec, cfg, d, out, sink)
    finally:
        shutdown(d)


def launch_variant(
    spec: VariantSpec, nproc: int = 1, sink: MetricSink | None = None, timeout: float | None = None
) -> dict[str, Any]:
    """Run the variant in this process (nproc 1) or as `nproc` torchrun processes.

    Under torchrun the children write metrics.jsonl; they are replayed into `sink` afterwards.
    """
    if nproc <= 1:
        return run_variant(spec, sink)
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_file = out / "spec.json"
    write_atomic(spec_file, spec.to_json())
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "mediswift.train.pretrain",
        "--spec",
        str(spec_file),
    ]
    proc = subprocess.run(cmd, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec.name}: torchrun exited with {proc.returncode} ({' '.join(cmd)})")
    if sink is not None and (out / "metrics.jsonl").is_file():
        for step, metrics in read_metrics(out / "metrics.jsonl"):
            sink.log_metrics(metrics, step)
        sink.flush()
    return json.loads((out / RECORD).read_text())


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


def _run(
    spec: VariantSpec, cfg: PretrainConfig, d: Dist, out: Path, sink: MetricSink | None
) -> dict[str, Any]:
    if cfg.seq_len > cfg.block_size:
        raise ValueError(f"seq_len {cfg.seq_len} exceeds block_size {cfg.block_size}")
    per_step = cfg.micro_batch * d.world_size
    if cfg.global_batch % per_step:
        raise ValueError(
            f"global_batch {cfg.global_batch} is not a multiple of micro_batch {cfg.micro_batch} "
            f"x {d.world_size} processes"
        )
    grad_accum = cfg.global_batch // per_step
    method = cfg.sparsity_method if spec.sparsity > 0 else "static"
    if cfg.fsdp and method != "static":
        raise ValueError("dynamic sparsity (set/rigl) needs whole matrices: not with fsdp")
    on_gpu = d.device.type == "cuda"
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    amp = torch.bfloat16 if on_gpu else None
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # Model and masks: the same seed on every rank gives the same init and masks.
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = GPT(model_config(cfg.model, spec.vocab_size, cfg.block_size, cfg.dropout))
    masks = make_masks(model, spec.sparsity, seed=cfg.seed)
    counts = count_active(model, masks)
    resume = ckpt.latest_checkpoint(out / "checkpoints")
    state, tensors, train_json = TrainState(), {}, {}
    if resume is not None:
        train_json, tensors = ckpt.load_train_state(resume)
        model.load_state_dict(ckpt.load_model(resume).state_dict(), strict=True)
        masks = ckpt.load_masks(resume) or masks  # dynamic sparsity moves them
        state = TrainState.from_json(train_json)
    model.to(d.device)
    masked = MaskedParams(model, masks)
    masked.apply_to_weights()
    if cfg.compile:
        model = torch.compile(model)  # type: ignore[assignment]
    wrapped = wrap_model(model, d, fsdp=cfg.fsdp)
    if cfg.fsdp and d.enabled:
        masked = MaskedParams(wrapped, masks)  # bind to the sharded parameters
    optimizer = make_optimizer(
        wrapped, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay
    )
    dynamic = None
    if method in ("set", "rigl"):
        dynamic = DynamicSparsity(
            masked,
            method,
            cfg.steps,
            cfg.sparsity_update_every,
            cfg.sparsity_drop_fraction,
            cfg.sparsity_stop_fraction,
            seed=cfg.seed,
        )

    loader = make_train_loader(spec, d)
    val_batches = make_val_batches(spec, d)
    if resume is not None:
        ckpt.load_optimizer(resume, wrapped, optimizer, tensors)
        loader.load_state_dict(train_json["loader"][d.rank])
        torch.set_rng_state(tensors[f"rng.torch.{d.rank}"])
        if on_gpu and f"rng.cuda.{d.rank}" in tensors:  # dropout on the GPU draws from here
            torch.cuda.set_rng_state(tensors[f"rng.cuda.{d.rank}"], d.device)
        if dynamic is not None:
            dynamic.load_state_dict({"generator": tensors["dynamic.generator"]})
        if d.is_main:
            print(f"{spec.name}: resuming from {resume} (step {state.step})", flush=True)

    def val_loss() -> float:
        return evaluate(wrapped, val_batches, d, amp)

    run_logger = None
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        run_logger = JsonlMetrics(out / "metrics.jsonl", state.step, sink)

    sharded = cfg.fsdp and d.enabled

    def save(st: TrainState) -> None:
        loader_states = gather_objects(loader.state_dict(), d)
        rngs = gather_objects(torch.get_rng_state(), d)
        cuda_rngs = gather_objects(torch.cuda.get_rng_state(d.device), d) if on_gpu else []
        # Under FSDP every rank takes part in gathering the whole weights and moments.
        weights = ckpt.model_state(wrapped) if sharded else None
        opt_state = ckpt.optimizer_tensors(wrapped, optimizer) if sharded else None
        if not d.is_main:
            return
        extra = {f"rng.torch.{r}": t for r, t in enumerate(rngs)}
        extra |= {f"rng.cuda.{r}": t for r, t in enumerate(cuda_rngs)}
        if dynamic is not None:
            extra["dynamic.generator"] = dynamic.state_dict()["generator"]
        root = out / "checkpoints"
        ckpt.save_checkpoint(
            ckpt.step_dir(root, st.step),
            wrapped,
            masks=masked.bool_masks() if masked else None,
            optimizer=optimizer,
            train_state={**st.to_json(), "loader": loader_states},
            extra_tensors=extra,
            weights=weights,
            optimizer_state=opt_state,
        )
        ckpt.prune_checkpoints(root, cfg.keep_checkpoints)
        _write_curve(out / "curve.csv", st.curve)
        if run_logger is not None:
            run_logger.flush()

    seq_flops = step_flops(
        model.config.n_layer,
        model.config.d_model,
        model.config.n_head,
        spec.vocab_size,
        cfg.seq_len,
        cfg.global_batch,
        0.0,
    )  # what the dense hardware executes per step (masked zeros are still multiplied)
    peak = None
    if cfg.measure_peak and d.is_main:
        from mediswift.peak import matmul_peak

        peak = matmul_peak(d.device, torch.bfloat16 if on_gpu else torch.float32)
    loop_cfg = LoopConfig(
        steps=cfg.steps,
        grad_accum=grad_accum,
        grad_clip=cfg.grad_clip,
        peak_lr=cfg.lr,
        warmup_fraction=cfg.warmup_fraction,
        min_lr_ratio=cfg.min_lr_ratio,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        amp_dtype=amp,
    )

    def log(step: int, metrics: dict[str, float]) -> None:
        run_logger.log_metrics(metrics, step)  # type: ignore[union-attr]
        if step % (cfg.log_every * 10) == 0 or step == cfg.steps or "val_loss" in metrics:
            val = f" val {metrics['val_loss']:.4f}" if "val_loss" in metrics else ""
            print(
                f"{spec.name}: step {step}/{cfg.steps} loss {metrics['train_loss']:.4f}{val} "
                f"lr {metrics['lr']:.2e} {metrics['tokens_per_s']:,.0f} tok/s",
                flush=True,
            )

    hooks = Hooks(
        evaluate=val_loss,
        checkpoint=save,
        log=log if d.is_main else None,
    )
    state = train(
        wrapped,
        optimizer,
        iter(loader),
        loop_cfg,
        d,
        state,
        masked,
        dynamic,
        hooks,
        flops_per_step=seq_flops,
        peak_flops=peak,
    )
    final_weights = ckpt.model_state(wrapped) if sharded else None
    record: dict[str, Any] = {}
    if d.is_main:
        record = _finish(
            spec, cfg, counts, wrapped, masked, state, out, method, run_logger, final_weights
        )
    barrier(d)
    return record if d.is_main else json.loads((out / RECORD).read_text())


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
    counts: Any,
    model: torch.nn.Module,
    masked: MaskedParams,
    state: TrainState,
    out: Path,
    method: str,
    run_logger: JsonlMetrics,
    weights: dict[str, torch.Tensor] | None,
) -> dict[str, Any]:
    masks = masked.bool_masks() if masked else None
    final = ckpt.save_checkpoint(out / "final", model, masks=masks, weights=weights)
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
        "checkpoint": str(final),
        **asdict(counts),
        "train_flops": flops,
        "flops_ratio": flops / training_flops_for(cfg, spec, state.tokens, dense=True),
        "final_train_loss": state.curve[-1]["train_loss"] if state.curve else float("nan"),
        "final_val_loss": last_val,
        "val_ppl": math.exp(last_val) if not math.isnan(last_val) else float("nan"),
        "tokens": state.tokens,
        "steps": state.step,
        "loss_curve": str(out / "curve.csv"),
    }
    run_logger.log_metrics({"final_val_loss": last_val, "train_flops": flops}, state.step)
    run_logger.flush()
    write_atomic(out / RECORD, json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="pre-train one MediSwift variant (torchrun entry)")
    ap.add_argument("--spec", required=True, help="VariantSpec JSON file")
    args = ap.parse_args(argv)
    spec = VariantSpec.from_json(Path(args.spec).read_text())
    record = run_variant(spec)
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps({k: record[k] for k in ("name", "steps", "final_val_loss")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
