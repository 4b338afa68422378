"""End to end as a user runs it: `make serve`'s script starts a real Prefect server, a process
worker with the deployments of deployments/prefect.yaml and an MLflow server, all on loopback;
then `prefect deployment run mediswift/full-pipeline` runs the tiny recipe to completion."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from server_fixtures import assert_reopened_by_the_reports_command, report_flow_run

from flows.registry import plan
from mediswift.config import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "recipes" / "tiny.yaml")
PREFECT = str(REPO / ".venv" / "bin" / "prefect")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_env(tmp_path: Path, mirror_dir: Path, prefect_port: int) -> dict[str, str]:
    """`make serve`'s environment on its own home, serve folder and ports."""
    env = {
        **os.environ,
        "MEDISWIFT_HOME": str(tmp_path / "home"),
        "MEDISWIFT_SERVE_DIR": str(tmp_path / "serve"),
        "MEDISWIFT_MIRROR": str(mirror_dir),
        "PREFECT_PORT": str(prefect_port),
        "MLFLOW_PORT": str(_free_port()),
    }
    env.pop("PREFECT_API_URL", None)
    return env


def _script(name: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    path = str(REPO / "deployments" / name)
    return subprocess.run([path], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def served(tmp_path: Path, mirror_dir: Path):
    env = _serve_env(tmp_path, mirror_dir, _free_port())
    try:
        out = _script("serve.sh", env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{env['PREFECT_PORT']}/api"
        yield env
    finally:
        subprocess.run([str(REPO / "deployments" / "stop.sh")], env=env, timeout=60)


def test_serve_refuses_a_port_in_use(tmp_path: Path, mirror_dir: Path) -> None:
    """A server already on the Prefect port (the UI a CLI run prints uses 4200 too) would answer
    the script's health check: the stack must refuse to start, not run against it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _script("serve.sh", _serve_env(tmp_path, mirror_dir, port), timeout=60)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines() == [
        f"serve.sh: 127.0.0.1:{port} is already in use (a server from an earlier make serve"
        " or a UI command?): stop it, or set PREFECT_PORT to a free port"
    ]
    assert not list((tmp_path / "serve").glob("*.pid"))  # nothing was started


def _status(url: str, host: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host})) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_full_pipeline_deployment(served: dict[str, str], mirror_dir: Path) -> None:
    # Both servers answer only to their loopback names (no DNS rebinding from a web page).
    mlflow_api = "/api/2.0/mlflow/experiments/search?max_results=1"  # (/health answers anyone)
    for port, path in (
        (served["PREFECT_PORT"], "/api/health"),
        (served["MLFLOW_PORT"], mlflow_api),
    ):
        url = f"http://127.0.0.1:{port}{path}"
        assert _status(url, f"127.0.0.1:{port}") == 200
        assert _status(url, f"attacker.example:{port}") in (400, 403), url
    run = subprocess.run(
        [
            PREFECT,
            "deployment",
            "run",
            "mediswift/full-pipeline",
            "--param",
            f"recipe={TINY}",
            "--watch",
            "--watch-timeout",
            "900",
        ],
        env=served,
        capture_output=True,
        text=True,
        timeout=960,
        cwd=REPO,
    )
    logs = Path(served["MEDISWIFT_SERVE_DIR"], "worker.log")
    detail = run.stdout[-2000:] + run.stderr[-2000:] + logs.read_text()[-4000:]
    assert run.returncode == 0 and "Completed" in run.stdout, detail

    home = Path(served["MEDISWIFT_HOME"])
    arts = plan(load_recipe(TINY, mirror=str(mirror_dir)), home)
    assert all(a.done() for a in arts.values()), detail
    assert (home / "report" / "tiny" / "report.html").is_file()

    # The runs went through the MLflow server into the SQLite store under MEDISWIFT_HOME.
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    cfg = load_recipe(TINY)
    pre = client.get_experiment_by_name(cfg.tracking.pretrain_experiment)
    fine = client.get_experiment_by_name(cfg.tracking.finetune_experiment)
    assert pre is not None and fine is not None
    pre_runs = client.search_runs([pre.experiment_id])
    assert len(pre_runs) == 2  # dense and 75% sparse
    assert all(r.info.status == "FINISHED" for r in pre_runs)
    assert all("prefect.flow_run_id" in r.data.tags for r in pre_runs)
    assert all("train_loss" in r.data.metrics for r in pre_runs)
    fine_runs = client.search_runs([fine.experiment_id])
    children = [r for r in fine_runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 4  # 2 variants x 2 tasks x 1 grid point x 1 seed

    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", run.stdout).group(1)  # type: ignore[union-attr]
    assert report_flow_run(home, "tiny") == (flow_run_id, served["PREFECT_PORT"])

    _cancel_during_pretraining(served, home)
    _stop_with_a_run_in_flight(served, home)
    # After a cancelled and a stopped pre-training run and `make stop`, the report still links
    # the run that evaluated, and the command it prints reopens the database that holds it.
    assert report_flow_run(home, "tiny")[0] == flow_run_id
    assert_reopened_by_the_reports_command(home, "tiny", flow_run_id)


def _run_processes(flow_run_id: str) -> list:
    """Processes of a flow run started by the process worker (they carry its id)."""
    import psutil

    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _start_long_pretraining(served: dict[str, str], home: Path) -> str:
    """A pre-training deployment run long enough to be stopped mid-training; returns its id
    once it has written a new checkpoint."""
    import time

    overrides = '{"pretrain_steps": 5000, "extra": {"pretrain": {"checkpoint_every": 50}}}'
    started = subprocess.run(
        [PREFECT, "deployment", "run", "mediswift/pretrain", "--param", f"recipe={TINY}",
         "--param", f"overrides={overrides}"],
        env=served, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", started.stdout).group(1)  # type: ignore[union-attr]
    before, deadline = set(home.glob("pretrain/units/*/checkpoints/step_*")), time.monotonic() + 300
    while not set(home.glob("pretrain/units/*/checkpoints/step_*")) - before:
        assert time.monotonic() < deadline, "the run never started training"
        time.sleep(0.2)
    return flow_run_id


def _stop_with_a_run_in_flight(served: dict[str, str], home: Path) -> None:
    """`make stop` while a flow run trains: the run (in a session of its own, out of reach of
    the worker's group) is stopped too, and the script returns within 30 s."""
    import time

    flow_run_id = _start_long_pretraining(served, home)
    assert _run_processes(flow_run_id)
    t0 = time.monotonic()
    stop = _script("stop.sh", served, timeout=60)
    took = time.monotonic() - t0
    assert stop.returncode == 0 and "stopped flow run" in stop.stdout, stop.stdout + stop.stderr
    assert not _run_processes(flow_run_id), "a flow run outlived make stop"
    assert took < 30, f"make stop took {took:.0f} s"


def _cancel_during_pretraining(served: dict[str, str], home: Path) -> None:
    """A run cancelled from the UI (the API call its Cancel button makes) while it trains: it
    ends Cancelled within 30 s and leaves no process behind; the checkpoint stays."""
    import time

    flow_run_id = _start_long_pretraining(served, home)
    t0 = time.monotonic()
    cancel = subprocess.run(
        [PREFECT, "flow-run", "cancel", flow_run_id],
        env=served, capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    while _run_processes(flow_run_id) and time.monotonic() - t0 < 60:
        time.sleep(0.5)
    took = time.monotonic() - t0
    assert not _run_processes(flow_run_id), "processes of the cancelled run left after 60 s"
    assert took < 30, f"the cancelled run took {took:.0f} s to stop"
    # The run's own process reports a crash on the signal; the worker then records Cancelled.
    while True:
        state = subprocess.run(
            [PREFECT, "flow-run", "inspect", flow_run_id],
            env=served, capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        if "StateType.CANCELLED" in state.stdout or time.monotonic() - t0 > 60:
            break
        time.sleep(1)
    assert "StateType.CANCELLED" in state.stdout, state.stdout[-2000:]
