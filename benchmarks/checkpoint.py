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
from mediswift.train.optim import optimizer_for


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
    """Read a checkpoint back whole: safetensors maps files lazily, so every page of every
    tensor is touched (one byte a page), as loading it into a model would."""
    files, _ = ckpt.read_checkpoint(path)
    for tensors in files.values():
        for t in tensors.values():
            t.reshape(-1).view(torch.uint8)[::4096].sum()


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(size: str, sparsity: float, vocab: int, repeats: int, root: Path) -> list[dict]:
    model, masks, opt = trained_state(size, sparsity, vocab)
    rows = []
    for fmt, save in ((1, save_format_1), (2, save_format_2)):
        path = root / f"{size}-s{sparsity}-f{fmt}"

        def write(path: Path = path, save=save) -> None:
            shutil.rmtree(path, ignore_errors=True)
            save(path, model, masks, opt)

        t_save = timed(write, repeats)
        t_load = timed(lambda path=path: read(path), repeats)
        rows.append(
            {
                "size": size,
                "sparsity": sparsity,
                "format": fmt,
                "bytes": ckpt.checkpoint_bytes(path),
                "save_s": t_save,
                "load_s": t_load,
            }
        )
        shutil.rmtree(path)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["small"])
    ap.add_argument("--vocab", type=int, default=42384)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = ap.parse_args()
    root = Path(args.dir or tempfile.mkdtemp(prefix="ckpt-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{torch.get_num_threads()} threads, writing under {root}")
    print("| size | sparsity | format | MB | save s | load s | bytes vs format 1 |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        for s in (0.0, 0.75):
            rows = measure(size, s, args.vocab, args.repeats, root)
            for r in rows:
                ratio = r["bytes"] / rows[0]["bytes"]
                print(
                    f"| {size} | {s:.0%} | {r['format']} | {r['bytes'] / 1e6:,.1f} | "
                    f"{r['save_s']:.3f} | {r['load_s']:.3f} | {ratio:.2f} |",
                    flush=True,
                )
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
