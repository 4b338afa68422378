"""Multi-node pre-training on loopback: two "nodes" of one process each, meeting at a c10d
rendezvous on 127.0.0.1 (gloo), train exactly like one node of two processes (`--standalone`);
a node killed after the first checkpoint takes the run down, and starting both nodes again --
through the Slurm batch script, with stand-ins for srun and scontrol -- finishes it with the
uninterrupted run's losses and weights. Plus the launch commands, the GPU work-pool template and
the deployment that targets it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from training_fixtures import free_port, tiny_pretrain_config, tiny_variant

from mediswift.config import PretrainConfig
from mediswift.train import checkpoint as ckpt
from mediswift.train.launch import Launch, launch_for, node_command, torchrun_command
from mediswift.train.pretrain import VARIANT_MANIFEST, VariantSpec, launch_variant

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "deployments" / "slurm" / "pretrain.sbatch"
STEPS = 48  # long enough that a kill at the first checkpoint (step 6) lands mid-run
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same float sums in every process


def spec(out: Path, nproc: int, nnodes: int = 1, port: int | None = None) -> VariantSpec:
    cfg = tiny_pretrain_config(
        steps=STEPS,
        eval_every=6,
        checkpoint_every=6,
        seed=2,
        nproc=nproc,
        nnodes=nnodes,
        rdzv_endpoint=f"127.0.0.1:{port}" if port else None,
    )
    return tiny_variant(out, cfg)


def write_spec(s: VariantSpec) -> Path:
    out = Path(s.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spec.json").write_text(s.to_json())
    return out / "spec.json"


def start_node(spec_file: Path, log: Path) -> subprocess.Popen:
    """One node's part, as every node starts it; in its own session, like a separate machine."""
    cmd = [sys.executable, "-m", "mediswift.train.launch", "--spec", str(spec_file)]
    with open(log, "w") as f:
        return subprocess.Popen(
            cmd, cwd=REPO, env=ENV, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill_node(proc: subprocess.Popen) -> None:
    """The node goes down: its torchrun agent and the workers (which run in their own sessions)."""
    tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(30)


def assert_same_run(a: Path, b: Path) -> None:
    """The same curve (train and validation losses, lr) and the same final weights, bit for bit:
    the same two ranks sum the same numbers, whichever node a rank runs on."""
    assert (a / "curve.csv").read_text() == (b / "curve.csv").read_text()
    wa = ckpt.load_model(a / "final").state_dict()
    wb = ckpt.load_model(b / "final").state_dict()
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


@pytest.fixture(scope="module")
def one_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one node of two processes (torchrun --standalone --nproc-per-node 2)."""
    out = tmp_path_factory.mktemp("one-node") / "variant"
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        record = launch_variant(spec(out, nproc=2), timeout=180)
    finally:
        os.environ.pop("OMP_NUM_THREADS")
    assert record["steps"] == STEPS
    return out


@pytest.mark.slow
def test_two_nodes_train_like_one_node(tmp_path: Path, one_node: Path, monkeypatch) -> None:
    """Node 2 runs the launch command; node 1 is what the pretrain task runs (launch_variant)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "variant"
    two = spec(out, nproc=1, nnodes=2, port=free_port())
    other = start_node(write_spec(two), tmp_path / "node2.log")
    try:
        record = launch_variant(two, timeout=180)
        assert other.wait(60) == 0, (tmp_path / "node2.log").read_text()
    finally:
        if other.poll() is None:
            kill_node(other)
    assert record["steps"] == STEPS
    assert_same_run(one_node, out)


def fake_slurm(bin_dir: Path) -> Path:
    """srun and scontrol stand-ins: srun runs its command once per node, all at once, here."""
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf '127.0.0.1\\n127.0.0.1\\n'\n")
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        "while [[ $1 == --* ]]; do shift; done\n"
        "pids=()\n"
        'for _ in $(seq "$SLURM_NNODES"); do "$@" & pids+=($!); done\n'
        'rc=0; for p in "${pids[@]}"; do wait "$p" || rc=1; done; exit $rc\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir


def run_sbatch(spec_file: Path, tmp_path: Path, port: int) -> subprocess.CompletedProcess:
    env = {
        **ENV,
        "PATH": f"{fake_slurm(tmp_path / 'bin')}{os.pathsep}{ENV['PATH']}",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "node[1-2]",
        "MEDISWIFT_RDZV_PORT": str(port),
        "MEDISWIFT_PYTHON": sys.executable,
    }
    return subprocess.run(
        ["bash", str(SBATCH), str(spec_file)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_killed_node_then_both_restarted_finish_the_run(tmp_path: Path, one_node: Path) -> None:
    out = tmp_path / "variant"
    port = free_port()
    spec_file = write_spec(spec(out, nproc=1, nnodes=2, port=port))
    node1 = start_node(spec_file, tmp_path / "node1.log")
    node2 = start_node(spec_file, tmp_path / "node2.log")
    try:
        deadline = time.monotonic() + 120
        while ckpt.latest_checkpoint(out / "checkpoints") is None:
            assert node1.poll() is None, (tmp_path / "node1.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        kill_node(node2)
        # The survivor's next collective finds its peer gone: the run fails, it does not hang.
        assert node1.wait(90) != 0
    finally:
        for node in (node1, node2):
            if node.poll() is None:
                kill_node(node)
    assert not (out / VARIANT_MANIFEST).exists(), "the run ended before the kill: raise STEPS"
    saved = ckpt.latest_checkpoint(out / "checkpoints")
    assert saved is not None and int(saved.name.split("_")[1]) < STEPS

    proc = run_sbatch(spec_file, tmp_path, port)  # both nodes again, as a requeued job would
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from" in proc.stdout
    assert_same_run(one_node, out)


# --- Commands, template, deployment -------------------------------------------------------------


def test_launch_commands() -> None:
    """One node: a private rendezvous. Several: c10d at the endpoint, the id defaulting to the
    variant's unit key; the launch checks the batch split over all processes."""
    cfg = PretrainConfig(global_batch=32, micro_batch=4, nproc=4, nnodes=2, rdzv_endpoint="h:1")
    launch = launch_for(cfg, "unitkey")
    args = launch.torchrun_args()
    assert args[args.index("--rdzv-backend") + 1] == "c10d"
    assert args[args.index("--rdzv-endpoint") + 1] == "h:1"
    assert args[args.index("--rdzv-id") + 1] == "unitkey"
    assert args[args.index("--nnodes") + 1] == "2" and "--standalone" not in args
    cmd = torchrun_command(launch, "s.json")
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert cmd[-4:] == ["-m", "mediswift.train.pretrain", "--spec", "s.json"]
    assert "--rdzv-endpoint h:1" in node_command(launch, "s.json")
    single = launch_for(cfg, "k", nnodes=1, rdzv_endpoint=None)
    assert single.torchrun_args() == ["--standalone", "--nproc-per-node", "4"]
    assert launch_for(cfg, "k", nproc=1, nnodes=1).in_process
    with pytest.raises(ValueError, match="multiple of micro_batch"):
        launch_for(cfg, "k", nnodes=3)
    with pytest.raises(ValueError, match="rendezvous"):
        Launch(nproc=1, nnodes=2)


@pytest.mark.subprocess
def test_launch_module_prints_the_node_command(tmp_path: Path) -> None:
    spec_file = write_spec(spec(tmp_path / "unit-key", nproc=1, nnodes=2, port=1234))
    proc = subprocess.run(
        [sys.executable, "-m", "mediswift.train.launch", "--spec", str(spec_file), "--print"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "--rdzv-endpoint 127.0.0.1:1234 --rdzv-id unit-key" in line
    assert line.endswith(f"-m mediswift.train.pretrain --spec {spec_file}")


def test_gpu_pool_template_is_valid_and_targeted() -> None:
    """The template passes the server's checks for a work pool, renders into the process
    worker's job configuration (with the variables' defaults), and the pretrain-gpu
    deployment runs the pretrain stage there."""
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.templating import apply_values
    from prefect.workers.process import ProcessWorker

    template = json.loads((REPO / "deployments" / "gpu-pool.json").read_text())
    pool = WorkPoolCreate(name="mediswift-gpu", type="process", base_job_template=template)
    assert pool.base_job_template == template
    defaults = {k: v.get("default") for k, v in template["variables"]["properties"].items()}
    rendered = apply_values(template["job_configuration"], defaults)
    job = ProcessWorker.job_configuration.model_validate(rendered)
    assert job.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    with pytest.raises(ValueError):  # the same check refuses a broken template
        WorkPoolCreate(name="x", type="process", base_job_template={"variables": {}})

    deployments = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    gpu = next(d for d in deployments["deployments"] if d["name"] == "pretrain-gpu")
    assert gpu["work_pool"]["name"] == "mediswift-gpu"
    assert gpu["parameters"]["stages"] == ["pretrain"]
    assert gpu["entrypoint"] == "flows/pipeline.py:mediswift"
