"""The CUDA-only branches of pre-training, exercised as far as a CPU allows.

On a GPU a run trains under bf16 autocast, may be compiled, shards the model with FSDP2 and may
resume on another number of GPUs than it saved with. Here: bf16 autocast on CPU stays close to
fp32; the compiled forward matches eager; FSDP2 under bf16 autocast over gloo (2 processes, the
real pre-training code with only its autocast decision forced) matches one process; and a run
saved by 2 processes resumes in 1 (and one saved by 1 resumes in 2 under FSDP2) with the same
losses as the uninterrupted run.

Run as a script (under torchrun) this file is the bf16 worker: `run_variant` with autocast on.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from training_fixtures import tiny_pretrain_config, tiny_variant

import mediswift.train.pretrain as pretrain
from mediswift.config import PretrainConfig
from mediswift.model.gpt import GPT, model_config
from mediswift.train import checkpoint as ckpt
from mediswift.train.distributed import Dist
from mediswift.train.loop import LoopConfig, TrainState, train
from mediswift.train.optim import optimizer_for
from mediswift.train.pretrain import VariantSpec, launch_variant, run_variant
from mediswift.train.report import read_curve
from mediswift.train.synthetic import SyntheticTokens

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_cfg(**kw) -> PretrainConfig:
    return tiny_pretrain_config(**({"seed": 3} | kw))


variant = tiny_variant


def losses(out: Path) -> list[float]:
    return [r["train_loss"] for r in read_curve(out / "curve.csv")]


def val_losses(out: Path) -> list[float]:
    return [r["val_loss"] for r in read_curve(out / "curve.csv") if r["val_loss"] is not None]


# --- bf16 autocast -----------------------------------------------------------------------------


def train_tiny(amp: torch.dtype | None, steps: int = 12) -> list[float]:
    """`steps` optimizer steps of the tiny model through the real loop, autocast `amp`."""
    torch.manual_seed(0)
    model = GPT(model_config("tiny", VOCAB, 32))
    cfg = tiny_cfg(steps=steps)
    loop = dataclasses.replace(LoopConfig.from_settings(cfg, 2, amp), checkpoint_every=10**9)
    state = train(
        model,
        optimizer_for(model, cfg),
        SyntheticTokens(VOCAB, 16, 4, seed=0),
        loop,
        Dist(),
        TrainState(),
    )
    return [r["train_loss"] for r in state.curve]


def test_bf16_autocast_on_cpu_stays_close_to_fp32() -> None:
    """The loop's autocast (what CUDA runs use) really computes in bf16, and its losses stay
    finite and within bf16 rounding of the fp32 run's."""
    model = GPT(model_config("tiny", VOCAB, 32))
    x = torch.randint(VOCAB, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(x)
    assert logits.dtype == torch.bfloat16  # the matmuls ran in bf16, not a silent no-op

    fp32, bf16 = train_tiny(None), train_tiny(torch.bfloat16)
    assert all(np.isfinite(bf16))
    assert fp32 != bf16  # different arithmetic, so different bits
    assert bf16[-1] < bf16[0] - 0.5  # it learns
    assert bf16 == pytest.approx(fp32, rel=5e-3)  # measured: at most 1.2e-3 apart


# --- torch.compile ------------------------------------------------------------------------------


@pytest.mark.slow  # compiling takes half a minute on 2 cores
def test_compiled_forward_matches_eager_on_cpu() -> None:
    """torch.compile (inductor's C++ backend on CPU, Triton on CUDA) gives the eager logits."""
    from torch._inductor import exc as inductor_exc

    torch.manual_seed(0)
    model = GPT(model_config("tiny", VOCAB, 32)).eval()
    x = torch.randint(VOCAB, (2, 16))
    with torch.no_grad():
        eager, _ = model(x)
        try:
            compiled, _ = torch.compile(model)(x)
        except (inductor_exc.InvalidCxxCompiler, inductor_exc.CppCompileError) as e:
            pytest.skip(f"no working C++ compiler for inductor on this machine: {e}")
    assert torch.allclose(compiled, eager, atol=1e-5, rtol=1e-4)


# --- FSDP2 under bf16 autocast over gloo ---------------------------------------------------------


def bf16_setup(original):
    """`_setup` with bf16 autocast on CPU: the decision CUDA runs take, nothing else changed."""

    def setup(*args):
        return dataclasses.replace(original(*args), amp=torch.bfloat16)

    return setup


def torchrun_bf16(spec_file: Path, nproc: int) -> subprocess.CompletedProcess:
    """This file as the worker under torchrun: `run_variant` with bf16 autocast forced on."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), __file__, "--spec", str(spec_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_fsdp2_bf16_over_gloo_matches_one_process(tmp_path: Path, monkeypatch) -> None:
    """2 processes sharding the model with FSDP2 under bf16 autocast (the paper-xl recipe's
    numerics) train like 1 process under bf16 autocast, within bf16 reduction-order noise;
    the checkpoint it gathers is whole fp32 weights with the sparse weights still zero."""
    run_variant(variant(tmp_path / "fp32", tiny_cfg()))  # autocast off, as on CPU
    monkeypatch.setattr(pretrain, "_setup", bf16_setup(pretrain._setup))
    run_variant(variant(tmp_path / "single", tiny_cfg()))

    spec_file = tmp_path / "fsdp.json"
    spec_file.write_text(variant(tmp_path / "fsdp", tiny_cfg(fsdp=True)).to_json())
    proc = torchrun_bf16(spec_file, 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    fp32, single, fsdp = (losses(tmp_path / n) for n in ("fp32", "single", "fsdp"))
    assert len(single) == len(fsdp) == 6
    assert single != fp32  # bf16 did run
    assert single == pytest.approx(fp32, rel=5e-3)  # measured: 3e-4 apart
    # bf16 sums in another order (sharded, all-reduced): measured 1e-4 apart.
    assert fsdp == pytest.approx(single, rel=2e-3)
    assert val_losses(tmp_path / "fsdp") == pytest.approx(val_losses(tmp_path / "single"), rel=2e-3)
    weights = ckpt.load_model(tmp_path / "fsdp" / "final").state_dict()
    masks = ckpt.load_masks(tmp_path / "fsdp" / "final")
    assert all(w.dtype == torch.float32 for w in weights.values())
    assert masks and all(torch.all(weights[n][~m] == 0) for n, m in masks.items())


# --- Resuming on another number of processes ---------------------------------------------------


def write_token_shards(root: Path) -> tuple[list[str], list[str]]:
    """Token shards in the tokenize stage's format: a repetitive "language" the model learns."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[str]] = {"train": [], "validation": []}
    for split, n_shards in (("train", 2), ("validation", 1)):
        for i in range(n_shards):
            docs = []
            for _ in range(60):
                motif = rng.integers(3, VOCAB, size=int(rng.integers(3, 6)))
                docs.append([1, *np.tile(motif, int(rng.integers(5, 20))).tolist(), 2])
            table = pa.table(
                {
                    "doc_id": pa.array([f"pmid:{j}" for j in range(len(docs))]),
                    "input_ids": pa.array(docs, pa.list_(pa.uint16())),
                    "n_tokens": pa.array([len(d) for d in docs], pa.int32()),
                }
            )
            p = root / f"{split}-{i:05d}.parquet"
            pq.write_table(table, p)
            paths[split].append(str(p))
    return paths["train"], paths["validation"]


def resume_from(saved: Path, out: Path) -> None:
    """A fresh variant directory holding only `saved`'s first periodic checkpoint."""
    first = ckpt.list_checkpoints(saved / "checkpoints")[0]
    shutil.copytree(first, out / "checkpoints" / first.name)


def train_nproc(spec: VariantSpec, nproc: int) -> None:
    if nproc == 1:
        run_variant(spec)
    else:
        launch_variant(spec, nproc=nproc, timeout=240)


def assert_same_run(a: Path, b: Path, rel: float) -> None:
    for x, y in zip(losses(a), losses(b), strict=True):
        assert y == pytest.approx(x, rel=rel)
    assert val_losses(a) == pytest.approx(val_losses(b), rel=rel)
    wa = ckpt.load_model(a / "final").state_dict()
    wb = ckpt.load_model(b / "final").state_dict()
    for name in wa:  # float sums in another order: ~1e-7 gradient noise, ~1e-5 after Adam
        assert torch.allclose(wa[name], wb[name], atol=1e-4), name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("saved_by", "resumed_by", "fsdp"),
    [(2, 1, False), (1, 2, True)],
    ids=["ddp-2-to-1-token-shards", "fsdp-1-to-2-synthetic"],
)
def test_resume_on_another_number_of_processes(
    tmp_path: Path, saved_by: int, resumed_by: int, fsdp: bool
) -> None:
    """A checkpoint saved by `saved_by` processes resumes in `resumed_by`: every loader takes
    the global position, the weights and AdamW moments load whole (sharded again under FSDP2),
    and the steps after the resume match the uninterrupted run's (float-order tolerance; the
    2-process run is the DDP/FSDP-equivalent of the 1-process one, see test_ddp)."""
    if saved_by == 2:  # the token-shard loader, which keeps a world size in its position
        train_shards, val_shards = write_token_shards(tmp_path / "tokens")
        data = {"data": "shards", "train_shards": train_shards, "val_shards": val_shards}
    else:
        data = {}
    cfg = tiny_cfg(fsdp=fsdp)
    full = tmp_path / "full"
    train_nproc(variant(full, cfg, **data), saved_by)
    resumed = tmp_path / "resumed"
    resume_from(full, resumed)
    train_nproc(variant(resumed, cfg, **data), resumed_by)
    curve = read_curve(resumed / "curve.csv")
    assert [r["step"] for r in curve] == [1, 2, 3, 4, 5, 6]
    assert_same_run(full, resumed, rel=1e-5)


# --- The prepared GPU check -----------------------------------------------------------------------


def load_gpu_check():
    """benchmarks/gpu_check.py as a module (benchmarks/ is a folder of scripts, not a package)."""
    path = REPO / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["gpu_check"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_gpu_check_plans_the_med_model_and_refuses_without_cuda(capsys) -> None:
    """What runs without a GPU: the plan (Med's shapes and FLOPs, every configuration), 2:4
    pruning, and a clear refusal when no CUDA device exists."""
    gc = load_gpu_check()
    assert gc.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "24 layers, d 1024" in out and "8,192 tokens/step" in out
    assert out.count("mfu:") == 4 and "sparsity 75%, compile on" in out
    shapes = gc.matmul_shapes(model_config("med", 42384), 8192)
    assert [(m, k, n) for _, m, k, n in shapes] == [
        (8192, 1024, 1024),
        (8192, 1024, 4096),
        (8192, 4096, 1024),
    ]
    w = torch.randn(16, 32)
    pruned = gc.prune_2_4(w)
    assert ((pruned.reshape(-1, 4) != 0).sum(1) == 2).all()
    assert torch.equal(pruned[pruned != 0], w[pruned != 0])  # the kept ones are untouched
    if torch.cuda.is_available():
        return
    with pytest.raises(SystemExit, match="no CUDA device"):
        gc.main([])


def _worker(argv: list[str]) -> int:
    """torchrun entry: the pre-training main with bf16 autocast forced on (see bf16_setup)."""
    pretrain._setup = bf16_setup(pretrain._setup)  # type: ignore[assignment]
    return pretrain.main(argv)


if __name__ == "__main__":
    raise SystemExit(_worker(sys.argv[1:]))
