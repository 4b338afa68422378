"""Checkpoint save and load time and bytes: format 2 (sparse matrices as kept values + bits)
against format 1 (every tensor dense, masks as bool), dense and 75% sparse models.

One resumable checkpoint of each configuration: the weights, both AdamW moments (after one
optimizer step with masked gradients, re-masked as training does) and the masks. Format 2 is
`mediswift.train.checkpoint.save_checkpoint`; format 1 is written here the way that writer did
(safetensors, fsync'd, renamed into place), and both are read with
`mediswift.train.checkpoint.read_checkpoint`, which still reads format 1. Save includes the fsync
of every file, so it touches the disk; load reads from the page cache (the file was just
written; every page is touched), the best case for the dense format. Times are the median of
`--repeats`; the machine is shared, so single figures move.

Expectation, written before measuring (2 CPU cores, local SSD): at 75% a resumable checkpoint
is ~30% of the dense bytes (values are a quarter, plus 1 mask bit and ~0.75 sign bit per
element). At the `small` size (a few MB) both formats take milliseconds and format 2 saves up to
~2x slower (checking the pruned entries, gathering the kept values and packing bits are extra
passes, and writing a few MB costs little); at `med` (GBs) the write dominates and format 2
saves ~2x faster. Loading format 2 (unpack bits, scatter the values) costs up to ~2x the dense
load at `small`, nearer even at `med`, where reading 3x the bytes weighs more. A dense model in
format 2 is format 1 plus nothing (no masks): the same time.

Loading is timed five ways, each format in turn in every round (a shared machine's load
moves both alike), wall seconds with the process's CPU seconds in brackets: `verify` (the
sha256 digests, format 2 only: format 1 files have none), `read` (`read_tensors`: every
tensor whole in fresh memory), `load_model` (a GPT filled from the checkpoint, as fine-tuning
and export load it), and `resume` and `resume + 1st write` (below).

Expectation for decoding straight into the model, written before measuring: a format 2 `read`
must fill fresh memory for every decoded element (4.2 GB at Med, resumable) while format 1
only maps page-cached files, so it stays many times the dense read (~9 s -> 2-3 s); in
`load_model` both formats fill the parameters, dense by copying, format 2 by zeroing and
scattering a quarter, so format 2 is within 1.2-2x of format 1 there.

`resume` restores the model, masks and optimizer parts of a run's checkpoint
(`TrainCheckpoint.restore`, the digests apart) into a built run: a model with its own init,
masks bound to it and AdamW without state, as resuming finds them. `resume + 1st write` then
writes every page of the AdamW moments, as the first optimizer step does: format 1 maps them
from the file and pays for their memory only then (a copy of each page), format 2 has paid
while decoding.

Expectation for resuming, written before measuring: reading every tensor whole, then copying
the weights into the model, the masks into the run's and the moments into AdamW costs format 2
at Med 75% ~2.5-3 s against ~1 s for format 1 (which copies weights and masks too, but maps its
moments from the page cache). Decoding the weights straight into the parameters, the masks
straight from their bits and each moment once into its own tensor (no whole bool masks, no
dense copy of a weight) leaves the moments' fresh memory (2.7 GB at Med: page faults that
format 1 defers to the first optimizer step) as the main extra: ~1.5x format 1.

  python benchmarks/checkpoint.py                     # small (4 layers, d 256)
  python benchmarks/checkpoint.py --sizes small med   # + MediSwift-Med (~4 GB dense, ~10 GB RAM)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from mediswift.config import PretrainConfig
from mediswift.model import GPT, model_config
from mediswift.sparsity import MaskedParams, make_masks
from mediswift.train import checkpoint as ckpt
from mediswift.train.distributed import Dist
from mediswift.train.optim import optimizer_for
from mediswift.train.state import MaskState, ModelState, OptimizerState, TrainCheckpoint


def trained_state(
    size: str, sparsity: float, vocab: int
) -> tuple[GPT, dict, torch.optim.Optimizer]:
    """A model with masks applied and AdamW moments after one masked step (no data needed)."""
    torch.manual_seed(0)
    model = GPT(model_config(size, vocab, 1024))
    masks = make_masks(model, sparsity, seed=0)
    masked = MaskedParams(model, masks)
    masked.apply_to_weights()
    opt = optimizer_for(model, PretrainConfig(lr=1e-4))
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    masked.apply_to_grads()
    opt.step()
    masked.after_step(opt)
    return model, masks, opt


def save_format_1(path: Path, model: GPT, masks: dict, opt: torch.optim.Optimizer) -> None:
    """The format 1 writer: dense tensors, bool masks, config format 1, fsync, rename."""
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.mkdir(parents=True)
    (tmp / ckpt.CONFIG_FILE).write_text(json.dumps({"format": 1, "model": model.config.to_dict()}))
    tensors, groups = ckpt.optimizer_tensors(model, opt)
    files = {ckpt.MODEL_FILE: ckpt.model_state(model), ckpt.TRAIN_TENSORS_FILE: tensors}
    if masks:
        files[ckpt.MASKS_FILE] = masks
    for name, t in files.items():
        save_file({k: v.contiguous() for k, v in t.items()}, str(tmp / name))
    (tmp / ckpt.TRAIN_JSON_FILE).write_text(json.dumps({"optimizer_groups": groups}))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    tmp.rename(path)


def save_format_2(path: Path, model: GPT, masks: dict, opt: torch.optim.Optimizer) -> None:
    ckpt.save_checkpoint(path, model, masks or None, opt, {})


def read(path: Path) -> None:
    """Read a checkpoint's tensors back whole, as resuming does (digests apart: `verify`):
    safetensors maps files lazily, so every page of every tensor is touched (one byte a page)."""
    for tensors in ckpt.read_tensors(path).values():
        for t in tensors.values():
            t.reshape(-1).view(torch.uint8)[::4096].sum()


def load(path: Path) -> None:
    """Load the model as fine-tuning and export do (`load_model`: the weights into a GPT)."""
    ckpt.load_model(path)


def resumable(size: str, sparsity: float, vocab: int) -> TrainCheckpoint:
    """What a run has built when it resumes: a model with its own init, masks drawn from another
    seed bound to it, AdamW without state yet; their parts of the run's checkpoint."""
    model = GPT(model_config(size, vocab, 1024))
    masked = MaskedParams(model, make_masks(model, sparsity, seed=1))
    opt = optimizer_for(model, PretrainConfig(lr=1e-4))
    d = Dist()
    parts = {
        "model": ModelState(model, d, sharded=False),
        "masks": MaskState(masked, d),
        "optimizer": OptimizerState(model, opt, d, sharded=False),
    }
    return TrainCheckpoint(model.config, d, parts)


def first_writes(checkpoint: TrainCheckpoint) -> None:
    """Write one entry a page of every AdamW tensor, as the first step after resuming does:
    format 1 maps its moments from the file, and pays for their memory only then."""
    optimizer = checkpoint.parts["optimizer"].optimizer  # type: ignore[attr-defined]
    for state in optimizer.state.values():
        for t in state.values():
            if t.dim():
                flat = t.view(-1).view(torch.uint8)
                flat[::4096] = flat[::4096]


def timed_once(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of one call: on a shared machine the wall time also counts waiting
    for a core, the process's CPU time does not (page faults included)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def medians(times: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def interleaved(fn, paths: dict[int, Path], repeats: int) -> dict[int, tuple[float, float]]:
    """`fn(path)` timed for each format in turn, `repeats` rounds: the formats see the same
    load of a shared machine, so their ratio moves less than their times."""
    times: dict[int, list] = {fmt: [] for fmt in paths}
    for _ in range(repeats):
        for fmt, path in paths.items():
            times[fmt].append(timed_once(lambda path=path: fn(path)))
    return {fmt: medians(t) for fmt, t in times.items()}


def saved(
    size: str, sparsity: float, vocab: int, repeats: int, root: Path
) -> tuple[dict[int, dict], dict[int, Path]]:
    """Each format's row (save time, bytes) and checkpoint, saved from one trained state."""
    model, masks, opt = trained_state(size, sparsity, vocab)
    rows, paths = {}, {}
    for fmt, save in ((1, save_format_1), (2, save_format_2)):
        paths[fmt] = path = root / f"{size}-s{sparsity}-f{fmt}"

        def write(path: Path = path, save=save) -> None:
            shutil.rmtree(path, ignore_errors=True)
            save(path, model, masks, opt)

        t_save = medians([timed_once(write) for _ in range(repeats)])[0]
        rows[fmt] = {"size": size, "sparsity": sparsity, "format": fmt, "save_s": t_save}
        rows[fmt]["bytes"] = ckpt.checkpoint_bytes(path)
    return rows, paths


def measure(
    size: str, sparsity: float, vocab: int, repeats: int, root: Path, load_repeats: int
) -> list[dict]:
    rows, paths = saved(size, sparsity, vocab, repeats, root)  # the trained model freed
    for column, fn in (("verify_s", ckpt.verify), ("read_s", read), ("model_s", load)):
        for fmt, t in interleaved(fn, paths, load_repeats).items():
            rows[fmt][column] = t
    target = resumable(size, sparsity, vocab)  # one for both formats: they restore the same

    def written(path: Path) -> None:
        target.restore(path)
        first_writes(target)

    for column, fn in (("resume_s", target.restore), ("written_s", written)):
        for fmt, t in interleaved(fn, paths, load_repeats).items():
            rows[fmt][column] = t
    for path in paths.values():
        shutil.rmtree(path)
    return [rows[1], rows[2]]


def row_text(r: dict, f1: dict) -> str:
    """One table row, CPU seconds in brackets; the ratios are against format 1 of the same
    size and sparsity, wall (CPU)."""
    columns = ("read_s", "model_s", "resume_s", "written_s")
    times = " | ".join(f"{r[c][0]:.3f} ({r[c][1]:.3f})" for c in columns)
    ratios = " | ".join(f"{r[c][0] / f1[c][0]:.2f} ({r[c][1] / f1[c][1]:.2f})" for c in columns)
    return (
        f"| {r['size']} | {r['sparsity']:.0%} | {r['format']} | {r['bytes'] / 1e6:,.1f} | "
        f"{r['save_s']:.3f} | {r['verify_s'][0]:.3f} | {times} | {ratios} | "
        f"{r['bytes'] / f1['bytes']:.2f} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small"])
    ap.add_argument("--vocab", type=int, default=42384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--load-repeats", type=int, default=None, help="(default: --repeats)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="ckpt-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{torch.get_num_threads()} threads, writing under {root}")
    print(
        "| size | sparsity | format | MB | save s | verify s | read s | load_model s | resume s "
        "| resume + 1st write s | read vs f1 | load_model vs f1 | resume vs f1 "
        "| resume + 1st write vs f1 | bytes vs f1 |"
    )
    print("|---" * 15 + "|")
    for size in args.sizes:
        for s in (0.0, 0.75):
            load_repeats = args.load_repeats or args.repeats
            rows = measure(size, s, args.vocab, args.repeats, root, load_repeats)
            for r in rows:
                print(row_text(r, rows[0]), flush=True)
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
