"""One writer per home: a second run waits for (or, asked to, refuses) a live holder; the lock
of a killed holder is taken over at once; three real runs started together on one home against a
slow loopback HTTP mirror all succeed and leave the home as one run would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mirror_server import MirrorServer

from mediswift.lock import HomeBusy, home_lock

REPO = Path(__file__).resolve().parents[1]

HOLD = """
import sys, time
from pathlib import Path
from mediswift.lock import home_lock
with home_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(home: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(home)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.subprocess
def test_busy_home_names_its_holder_and_a_dead_holder_is_taken_over(tmp_path: Path) -> None:
    proc = _holder(tmp_path)
    try:
        busy = rf"in use by pid {proc.pid} on .* since "
        with pytest.raises(HomeBusy, match=busy), home_lock(tmp_path, wait_s=0):
            pass
        waited: list[str] = []
        with (
            pytest.raises(HomeBusy),
            home_lock(tmp_path, wait_s=0.3, on_wait=waited.append, poll_s=0.05),
        ):
            pass
        assert len(waited) == 1 and "waiting" in waited[0]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The kernel dropped the dead holder's lock: taken at once, and the file names us now.
    with home_lock(tmp_path, wait_s=0):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


@pytest.mark.subprocess
def test_a_waiting_run_goes_on_when_the_holder_ends(tmp_path: Path) -> None:
    order: list[str] = []

    def first() -> None:
        with home_lock(tmp_path):
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.1)
    with home_lock(tmp_path, wait_s=10, poll_s=0.05):
        order.append("second in")
    t.join()
    assert order == ["first in", "first out", "second in"]


def _tree(home: Path) -> dict[str, int]:
    """Every finished file of the data stages (name -> size): what a run leaves behind.

    Hidden paths are skipped: temporaries, and the PMC listing caches (SQLite files whose
    size depends on the order their rows were written in, not on what they hold)."""
    out = {}
    for stage in ("raw", "download", "parse", "filter"):
        for p in sorted((home / stage).rglob("*")):
            hidden = any(part.startswith(".") for part in p.relative_to(home).parts)
            if p.is_file() and not hidden:
                out[str(p.relative_to(home))] = p.stat().st_size
    return out


@pytest.mark.slow
def test_three_runs_at_once_on_one_home(mirror_dir: Path, tmp_path: Path) -> None:
    server = MirrorServer(mirror_dir, delay_s=0.02)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "PREFECT_API_URL": "", "MEDISWIFT_MIRROR": server.url.rstrip("/")}
    cmd = [
        sys.executable, "-m", "mediswift.cli", "run", "--recipe", "tests/recipes/tiny.yaml",
        "--stages", "download,parse,filter",
    ]  # fmt: skip
    shared = tmp_path / "shared"
    logs = [tmp_path / f"run-{i}.err" for i in range(3)]
    handles = [open(log, "w") for log in logs]  # noqa: SIM115 (closed below)
    try:
        # The test holds the home while the three start, until one says it waits: so the runs
        # surely overlap (each starts its own Prefect server first, which takes a while).
        with home_lock(shared):
            procs = [
                subprocess.Popen(
                    [*cmd, "--home", str(shared)],
                    cwd=REPO,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=handle,
                )
                for handle in handles
            ]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not any(
                "waiting for it to finish" in log.read_text() for log in logs
            ):
                time.sleep(0.2)
        for p in procs:
            p.wait(timeout=600)
        errs = [log.read_text() for log in logs]
        assert [p.returncode for p in procs] == [0, 0, 0], errs
        single = subprocess.run(
            [*cmd, "--home", str(tmp_path / "single")], cwd=REPO, env=env, capture_output=True
        )
        assert single.returncode == 0, single.stderr
    finally:
        server.shutdown()
        for handle in handles:
            handle.close()
    assert _tree(tmp_path / "shared") == _tree(tmp_path / "single")
    assert sum("waiting for it to finish" in e for e in errs) >= 1
