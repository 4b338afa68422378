"""A lab's servers, for real: `make serve-team` (`MEDISWIFT_DB=postgres deployments/serve.sh`)
starts a PostgreSQL server, the Prefect server and the MLflow tracking server on it, the
deployments and a process worker, all on loopback. Four users' homes then run the tiny recipe's
`full-pipeline` deployment at once: every flow run completes, every MLflow run and registered
model version is there exactly once, no metric is lost, nothing is written to a SQLite store,
and `make stop` leaves no process. The servers' start time and peak memory are printed."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from server_fixtures import free_port, process_tree_memory, serve_script

from mediswift.config import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "recipes" / "tiny.yaml")
PREFECT = str(REPO / ".venv" / "bin" / "prefect")
USERS = 4
SERVERS = ("postgres", "prefect-server", "mlflow")
# The tiny recipe made smaller still (four runs share 2 cores): one variant (75% sparse), half
# its pre-training steps, one fine-tuning task; per home still a pre-training run, a sweep with
# its child run, an evaluation, a report and 2 registered model versions.
SMALLER = '{"pretrain_steps": 6, "sparsity_levels": [0.75], "finetune_tasks": ["hoc"]}'
pytestmark = [pytest.mark.slow, pytest.mark.server]


def _postgres_missing() -> bool:
    on_path = shutil.which("initdb")
    return not on_path and not list(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


class PeakMemory:
    """The servers' process trees sampled every half second: peak RSS and PSS per server."""

    def __init__(self, serve_dir: Path):
        self.pids = {n: int((serve_dir / f"{n}.pid").read_text().split()[0]) for n in SERVERS}
        self.peak = {n: (0, 0) for n in SERVERS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, pid in self.pids.items():
                rss, pss = process_tree_memory(pid)
                old = self.peak[name]
                self.peak[name] = (max(old[0], rss), max(old[1], pss))
            self._stop.wait(0.5)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self) -> str:
        mib = 1 << 20
        parts = [f"{n} {r / mib:.0f}/{p / mib:.0f}" for n, (r, p) in self.peak.items()]
        total = [sum(v[i] for v in self.peak.values()) / mib for i in (0, 1)]
        return f"peak MiB RSS/PSS: {', '.join(parts)}; total {total[0]:.0f}/{total[1]:.0f}"


@pytest.fixture(scope="module")
def team(mirror_dir: Path) -> Iterator[dict[str, str]]:
    """The team stack on its own folder (traversable, for the server's system user when the
    tests run as root), ports and database; stopped afterwards, and checked to leave nothing."""
    if _postgres_missing():
        pytest.skip("no PostgreSQL server binaries (Debian: apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="mediswift-team-"))
    base.chmod(0o711)
    env = {
        **os.environ,
        "MEDISWIFT_DB": "postgres",
        "MEDISWIFT_HOME": str(base / "server-home"),
        "MEDISWIFT_SERVE_DIR": str(base / "serve"),
        "MEDISWIFT_MIRROR": str(mirror_dir),
        "PREFECT_PORT": str(free_port()),
        "MLFLOW_PORT": str(free_port()),
        "MEDISWIFT_TEAM_BASE": str(base),
    }
    for key in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MEDISWIFT_TRACKING_SHARED"):
        env.pop(key, None)
    try:
        t0 = time.monotonic()
        out = serve_script("serve.sh", env, timeout=300)
        took = time.monotonic() - t0
        logs = _logs(base / "serve")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:] + logs
        said = [ln for ln in out.stdout.splitlines() if ln.startswith(("Database", "Started"))]
        print(f"\nteam servers up in {took:.1f} s: " + "; ".join(said))
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{env['PREFECT_PORT']}/api"
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{env['MLFLOW_PORT']}"
        yield env
    finally:
        started = _started_pids(base / "serve")
        t0 = time.monotonic()
        stop = serve_script("stop.sh", env, timeout=120)
        print(f"team servers stopped in {time.monotonic() - t0:.1f} s")
        left = [pid for pid in started if _alive(pid)] + _processes_under(base)
        shutil.rmtree(base, ignore_errors=True)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped postgres" in stop.stdout, stop.stdout
    assert not left, f"make stop left processes: {left}"


def _logs(serve_dir: Path) -> str:
    return "".join(
        f"\n--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
        for p in sorted(serve_dir.glob("*.log"))
    )


def _started_pids(serve_dir: Path) -> list[int]:
    return [int(p.read_text().split()[0]) for p in serve_dir.glob("*.pid")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_under(base: Path) -> list[str]:
    """Processes whose command line names a path under `base` (the servers, the worker)."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(base) in cmd:
            found.append(f"{p.info['pid']}: {cmd[:200]}")
    return found


def _prefect_flow_runs(api: str) -> list:
    """Every flow run the Prefect server holds (Prefect's own client: it speaks CSRF)."""
    import asyncio

    from prefect.client.orchestration import PrefectClient

    async def read() -> list:
        async with PrefectClient(api) as client:
            return await client.read_flow_runs(limit=200)

    return asyncio.run(read())


def _deployment_run(env: dict[str, str], home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [PREFECT, "deployment", "run", "mediswift/full-pipeline",
         "--param", f"recipe={TINY}", "--param", f"home={home}",
         "--param", f"overrides={SMALLER}",
         "--watch", "--watch-timeout", "600"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )  # fmt: skip


def test_four_homes_share_one_postgres_backed_stack(team: dict[str, str], mirror_dir: Path) -> None:
    base = Path(team["MEDISWIFT_TEAM_BASE"])
    serve_dir = Path(team["MEDISWIFT_SERVE_DIR"])
    homes = [base / f"user{i}" / ".mediswift" for i in range(USERS)]

    # The end-to-end path of `make serve`, four users at once: each a deployment run of the
    # tiny recipe into a home of its own, through the one worker, onto the PostgreSQL stores.
    t0 = time.monotonic()
    with PeakMemory(serve_dir) as memory:
        runs = [_deployment_run(team, home) for home in homes]
        outputs = [run.communicate(timeout=660)[0] for run in runs]
    took = time.monotonic() - t0
    print(f"{USERS} concurrent tiny runs in {took:.1f} s; {memory.report()}")
    logs = _logs(serve_dir)
    worker = (serve_dir / "worker.log").read_text(errors="replace").splitlines()
    errors = "\n".join([ln for ln in worker if "Error" in ln or "Exception" in ln][-40:])
    for run, out in zip(runs, outputs, strict=True):
        assert run.returncode == 0 and "Completed" in out, out[-2000:] + errors + logs[-4000:]
    for log in serve_dir.glob("*.log"):  # whole logs: the servers', the worker's (the runs')
        assert "database is locked" not in log.read_text(errors="replace"), log.name

    cfg = load_recipe(TINY, mirror=str(mirror_dir))
    for home in homes:
        # Nothing in SQLite: the runs went to the server, and the report links to its UI.
        assert not (home / "mlflow.db").exists()
        report = (home / "report" / "tiny" / "report.html").read_text()
        assert f"{team['MLFLOW_TRACKING_URI']}/#/runs/" in report

    # Prefect: one flow run per home, completed, all in the one server.
    flow_runs = _prefect_flow_runs(team["PREFECT_API_URL"])
    deployed = [r for r in flow_runs if r.deployment_id]
    assert Counter(r.parameters.get("home") for r in deployed) == Counter(map(str, homes))
    assert all(r.state_type.value == "COMPLETED" for r in deployed)

    client = MlflowClient(team["MLFLOW_TRACKING_URI"])
    home_ids = {(h / "home-id").read_text().strip() for h in homes}
    assert len(home_ids) == USERS

    # Pre-training: one run per variant and home, finished, with every logged metric point.
    pre = client.get_experiment_by_name(cfg.tracking.pretrain_experiment)
    assert pre is not None
    pre_runs = client.search_runs([pre.experiment_id], max_results=1000)
    seen = Counter((r.data.tags.get("mediswift.home"), r.info.run_name) for r in pre_runs)
    assert set(seen.values()) == {1} and len(seen) == USERS, seen
    assert {home for home, _ in seen} == home_ids
    assert all(r.info.status == "FINISHED" for r in pre_runs)
    assert all("prefect.flow_run_id" in r.data.tags for r in pre_runs)
    histories = {}
    for r in pre_runs:
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "train_loss")]
        assert len(steps) == len(set(steps)), f"{r.info.run_name}: a metric point twice"
        histories[r.info.run_id] = len(steps)
    assert len(set(histories.values())) == 1 and min(histories.values()) > 0, histories

    # Fine-tuning: a parent run per (variant, task) and home, a child per grid point.
    fine = client.get_experiment_by_name(cfg.tracking.finetune_experiment)
    assert fine is not None
    fine_runs = client.search_runs([fine.experiment_id], max_results=1000)
    parents = Counter(
        (r.data.tags.get("mediswift.home"), r.info.run_name)
        for r in fine_runs
        if r.data.tags.get("mediswift.kind") == "finetune-sweep"
    )
    assert set(parents.values()) == {1} and len(parents) == USERS, parents
    children = [r for r in fine_runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == USERS  # 1 variant x 1 task x 1 point x 1 seed, per home
    by_id = {r.info.run_id: r for r in fine_runs}
    for child in children:  # a child under its own home's parent
        parent = by_id[child.data.tags["mlflow.parentRunId"]]
        assert parent.data.tags["mediswift.home"] == child.data.tags["mediswift.home"]

    # The registry: every run that registered a model has exactly one version, and every
    # version belongs to one run.
    versions = client.search_model_versions("name LIKE 'mediswift-tiny-%'", max_results=1000)
    by_run = Counter(v.run_id for v in versions)
    assert set(by_run.values()) == {1}, by_run
    tagged = [r for r in pre_runs + fine_runs if r.data.tags.get("mediswift.registered_model")]
    assert {r.info.run_id for r in tagged} == set(by_run)
    for r in tagged:
        name, _, version = r.data.tags["mediswift.registered_model"].rpartition("/")
        assert client.get_model_version(name, version).run_id == r.info.run_id
    per_name = Counter(v.name for v in versions)
    assert set(per_name) == {"mediswift-tiny-s75", "mediswift-tiny-s75-hoc"}
    assert set(per_name.values()) == {USERS}, per_name  # one version per home
    for name, count in per_name.items():  # versions 1..n, none skipped or doubled
        numbers = sorted(int(v.version) for v in versions if v.name == name)
        assert numbers == list(range(1, count + 1)), (name, numbers)

    # One alias set from several homes at once (the store reads, then inserts): each call
    # succeeds, and the alias names one of the versions.
    from concurrent.futures import ThreadPoolExecutor

    from mediswift.tracking import ModelVersionRef, set_aliases

    name, uri = "mediswift-tiny-s75", team["MLFLOW_TRACKING_URI"]
    for burst in range(5):
        alias = f"team-{burst}"
        with ThreadPoolExecutor(8) as pool:
            jobs = [
                pool.submit(set_aliases, uri, ModelVersionRef(name, str(1 + i % USERS)), [alias])
                for i in range(8)
            ]
            for job in jobs:
                job.result()
        assert int(client.get_model_version_by_alias(name, alias).version) in range(1, USERS + 1)
