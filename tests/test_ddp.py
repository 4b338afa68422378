"""Data-parallel training: 2 processes under torchrun (gloo, CPU), with DDP or FSDP2 sharding, give
the same loss curve and weights as 1 process at the same global batch (there through gradient
accumulation), and sparse weights stay zero."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from training_fixtures import free_port, tiny_pretrain_config, tiny_variant

from mediswift.train import checkpoint as ckpt
from mediswift.train.pretrain import VARIANT_MANIFEST, VariantSpec, launch_variant, run_variant

REPO = Path(__file__).resolve().parents[1]


def spec(out: Path, fsdp: bool = False) -> VariantSpec:
    return tiny_variant(out, tiny_pretrain_config(seed=1, fsdp=fsdp))


class ListSink:
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.flushed = False

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append((step, metrics))

    def flush(self) -> None:
        self.flushed = True


def curve(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path: Path, fsdp: bool, monkeypatch) -> None:
    torch.set_num_threads(1)
    single = run_variant(spec(tmp_path / "single"))  # 1 process: 2 micro-batches of 4 per step

    if fsdp:  # through the launcher the Prefect task uses: torchrun, then metrics replayed
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        sink = ListSink()
        record = launch_variant(spec(tmp_path / "ddp", fsdp), nproc=2, sink=sink, timeout=180)
        assert record["steps"] == 6
        assert [step for step, _ in sink.rows] == [1, 2, 3, 4, 5, 6, 6]  # + the final summary
        assert "val_loss" in sink.rows[2][1] and sink.flushed
    else:  # the torchrun command line itself, on a free port
        spec_file = tmp_path / "spec.json"
        spec_file.write_text(spec(tmp_path / "ddp", fsdp).to_json())
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            "-m",
            "mediswift.train.pretrain",
            "--spec",
            str(spec_file),
        ]
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    a, b = curve(Path(single["loss_curve"])), curve(tmp_path / "ddp" / "curve.csv")
    assert len(a) == len(b) == 6
    for ra, rb in zip(a, b, strict=True):
        assert float(ra["train_loss"]) == pytest.approx(float(rb["train_loss"]), rel=1e-5)
        if ra["val_loss"]:
            assert float(ra["val_loss"]) == pytest.approx(float(rb["val_loss"]), rel=1e-5)
    assert float(a[-1]["train_loss"]) < float(a[0]["train_loss"])  # it trained
    wa = ckpt.load_model(tmp_path / "single" / "final").state_dict()
    wb = ckpt.load_model(tmp_path / "ddp" / "final").state_dict()
    for name in wa:
        # Float sums in another order: Adam turns 1e-7 gradient noise into at most ~1e-5 here.
        assert torch.allclose(wa[name], wb[name], atol=1e-4), name
    masks = ckpt.load_masks(tmp_path / "ddp" / "final")
    assert masks and all(torch.all(wb[n][~m] == 0) for n, m in masks.items())
    # Only rank 0 wrote: one checkpoint folder per saved step, no stray temp folders.
    names = sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir())
    assert names == ["step_00000003", "step_00000006"]


LAUNCHER = """
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from training_fixtures import tiny_pretrain_config, tiny_variant
from mediswift.train.pretrain import launch_variant
launch_variant(eval(sys.argv[1]), nproc=2)
"""
KILL_STEPS = 150


def kill_spec(out: Path) -> VariantSpec:
    """Long enough to be killed mid-run after its first checkpoint (step 10)."""
    cfg = tiny_pretrain_config(
        seed=1, steps=KILL_STEPS, checkpoint_every=10, eval_every=KILL_STEPS, log_every=10
    )
    return tiny_variant(out, cfg)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_killed_launcher_takes_torchrun_and_its_workers_with_it(
    tmp_path: Path, monkeypatch
) -> None:
    """SIGKILL of the process that launched torchrun (a CLI run killed hard) after a checkpoint:
    the agent and both workers are gone within 10 s, so no orphan keeps writing the unit; the
    re-run resumes and ends with the loss curve and weights of an uninterrupted run."""
    import signal
    import time

    import psutil

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "v"
    expr = f"tiny_variant(Path({str(out)!r}), tiny_pretrain_config(seed=1, steps={KILL_STEPS}, "
    expr += f"checkpoint_every=10, eval_every={KILL_STEPS}, log_every=10))"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, expr], cwd=REPO)
    deadline = time.monotonic() + 180
    children: list[psutil.Process] = []
    while len(children) < 3 or ckpt.latest_checkpoint(out / "checkpoints") is None:
        assert launcher.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.1)
        children = psutil.Process(launcher.pid).children(recursive=True)
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    gone, alive = psutil.wait_procs(children, timeout=10)
    for p in alive:
        p.kill()
    assert not alive, f"left running 10 s after the launcher was killed: {alive}"
    assert not (out / VARIANT_MANIFEST).exists(), "the run ended before it was killed"

    resumed = launch_variant(kill_spec(out), nproc=2, timeout=300)
    reference = launch_variant(kill_spec(tmp_path / "ref"), nproc=2, timeout=300)
    assert resumed["steps"] == reference["steps"] == KILL_STEPS
    assert (out / "curve.csv").read_text() == (tmp_path / "ref" / "curve.csv").read_text()
    wa = ckpt.load_model(out / "final").state_dict()
    wb = ckpt.load_model(tmp_path / "ref" / "final").state_dict()
    assert all(torch.equal(wa[n], wb[n]) for n in wa)
