"""Kill a real training process (SIGKILL) after a checkpoint, resume it, and get the same loss
curve and weights, bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_fixtures import tiny_pretrain_config, tiny_variant

from mediswift.train import checkpoint as ckpt
from mediswift.train.pretrain import VARIANT_MANIFEST, VariantSpec, run_variant

REPO = Path(__file__).resolve().parents[1]
STEPS = 60


def spec(out: Path, method: str = "static") -> VariantSpec:
    cfg = tiny_pretrain_config(
        global_batch=4,
        steps=STEPS,
        eval_every=10,
        checkpoint_every=10,
        sparsity_method=method,
        sparsity_levels=[0.0, 0.5],  # semi24's only level
        sparsity_update_every=7,
        seed=5,
    )
    return tiny_variant(out, cfg, name=f"tiny-s50-{method}")


def launch(spec_file: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "mediswift.train.pretrain", "--spec", str(spec_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", ["static", "rigl", "semi24"])
def test_killed_run_resumes_bitwise(tmp_path: Path, method: str) -> None:
    torch.set_num_threads(1)  # the same thread count as the subprocess: same float sums
    ref = run_variant(spec(tmp_path / "ref", method))

    out = tmp_path / "killed"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec(out, method).to_json())
    proc = launch(spec_file)
    deadline = time.monotonic() + 120
    while ckpt.latest_checkpoint(out / "checkpoints") is None:
        assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    assert not (out / VARIANT_MANIFEST).exists()
    resumed_from = ckpt.latest_checkpoint(out / "checkpoints")
    step = int(resumed_from.name.split("_")[1])  # type: ignore[union-attr]
    assert 10 <= step < STEPS

    proc = launch(spec_file)
    log = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, log
    assert f"resuming from {resumed_from}" in log

    assert (out / "curve.csv").read_text() == (tmp_path / "ref" / "curve.csv").read_text()
    a, b = ckpt.load_model(ref["checkpoint"]), ckpt.load_model(out / "final")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x.view(torch.int32), y.view(torch.int32)), name  # -0.0 included
    # Resumed from a sparse checkpoint (kept values + bits), the final files match byte for byte.
    assert "h.0.mlp.fc.weight.values" in load_file(str(out / "final" / ckpt.MODEL_FILE))
    for f in (ckpt.MODEL_FILE, ckpt.MASKS_FILE):
        assert (out / "final" / f).read_bytes() == (tmp_path / "ref" / "final" / f).read_bytes()
    ma, mb = ckpt.load_masks(ref["checkpoint"]), ckpt.load_masks(out / "final")
    assert all(torch.equal(ma[n], mb[n]) for n in ma)


@pytest.mark.slow
def test_a_second_writer_waits_for_the_unit(tmp_path: Path, capsys) -> None:
    """While another process holds the variant's folder (a killed run's worker that has not yet
    died), a new run of the same unit waits instead of writing the same checkpoints."""
    import threading

    from mediswift.lock import home_lock

    out = tmp_path / "v"
    result: dict = {}
    with home_lock(out, what="pre-training unit"):  # the old writer
        worker = threading.Thread(target=lambda: result.update(run_variant(spec(out))))
        worker.start()
        time.sleep(2.0)
        assert worker.is_alive()
        assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
    worker.join(120)
    assert result["checkpoint"] and (out / VARIANT_MANIFEST).is_file()
    assert "pre-training unit" in capsys.readouterr().out
