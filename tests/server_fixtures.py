"""A real Prefect server for tests that run the `mediswift` command as users do (a fixture
helper module: tests never import each other)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prefect_server(prefect_home: Path) -> Iterator[str]:
    """`prefect server start` on a free loopback port with its own home; yields the API URL
    once it answers, and stops the server (its whole process group) afterwards."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/prefect"), "server", "start", "--host", "127.0.0.1",
         "--port", str(port), "--no-services"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the Prefect server did not start")
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def serve_script(name: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    """`deployments/<name>` (serve.sh, stop.sh) as `make serve` / `make stop` run it."""
    path = str(REPO / "deployments" / name)
    return subprocess.run([path], env=env, capture_output=True, text=True, timeout=timeout)


def process_tree_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes of a process and all its descendants, summed ((0, 0) once it is
    gone). PSS shares shared pages out among the processes mapping them (PostgreSQL's backends
    all map its shared buffers: their RSS sum counts those once per backend)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    rss = pss = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = p.memory_full_info()
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
    return rss, pss


def report_flow_run(home: Path, recipe: str) -> tuple[str, str]:
    """(flow run id, port) of the report's Prefect flow-run link."""
    md = (home / "report" / recipe / "report.md").read_text()
    found = re.search(r"Prefect flow run: \[[^]]+\]\(http://127\.0\.0\.1:(\d+)/runs/flow-run/"
                      r"([0-9a-f-]{36})\)", md)  # fmt: skip
    assert found, md[-3000:]
    return found.group(2), found.group(1)


def assert_reopened_by_the_reports_command(home: Path, recipe: str, flow_run_id: str) -> None:
    """Start the Prefect server the report's command names (on a free port) and find the run."""
    md = (home / "report" / recipe / "report.md").read_text()
    command = re.search(r'PREFECT_HOME="([^"]+)" \.venv/bin/prefect server start', md)
    assert command, md[-3000:]
    prefect_home = Path(command.group(1).replace("$MEDISWIFT_HOME", str(home)))
    with prefect_server(prefect_home) as api:
        env = {**os.environ, "PREFECT_API_URL": api}
        shown = subprocess.run(
            [str(REPO / ".venv/bin/prefect"), "flow-run", "inspect", flow_run_id],
            env=env, capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
    assert shown.returncode == 0 and "COMPLETED" in shown.stdout, shown.stdout + shown.stderr
