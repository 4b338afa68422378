"""Temporary names are unique per writer, and a dead writer's leftovers are swept.

Two threads of one run used to share `.<name>.<pid>.tmp`: the first to rename it into place
took the other's bytes and the second failed on a file that was gone. And a writer killed
before its rename left the file behind forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mediswift.artifacts import sweep_stale_tmp
from mediswift.artifacts import tmp_path as temp_name

REPO = Path(__file__).resolve().parents[1]


def test_two_threads_writing_one_target_both_succeed(tmp_path: Path) -> None:
    """Both threads write a full Parquet file to their temp name, then both rename it in."""
    target = tmp_path / "docs-00000.parquet"
    table = pa.table({"doc_id": [f"pmid:{i}" for i in range(1000)]})
    both_written = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            tmp = temp_name(target)
            pq.write_table(table, tmp)
            both_written.wait()  # neither renames before both have written
            os.replace(tmp, target)
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert pq.read_table(target).equals(table)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no temp file left


def _temp_of_exited_writer(target: Path) -> Path:
    """A temp file written by a process that has exited (as if killed before its rename)."""
    code = (
        "import sys; from pathlib import Path; from mediswift.artifacts import tmp_path; "
        "p = tmp_path(Path(sys.argv[1])); p.write_bytes(b'partial'); print(p)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(target)], cwd=REPO, check=True, capture_output=True
    )
    return Path(out.stdout.decode().strip())


@pytest.mark.subprocess
def test_sweep_removes_dead_writers_temp_files_only(tmp_path: Path) -> None:
    unit = tmp_path / "parse" / "units" / "abc"
    unit.mkdir(parents=True)
    dead = _temp_of_exited_writer(unit / "docs-00000.parquet")
    mine = temp_name(unit / "docs-00001.parquet")
    mine.write_bytes(b"being written")
    other = unit / ".manifest.json.k3j2h1g0.tmp"  # a name `tmp_path` did not make
    other.write_bytes(b"?")
    live_child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from mediswift.artifacts import tmp_path; p = tmp_path(Path(sys.argv[1])); "
         "p.write_bytes(b'x'); print(p, flush=True); sys.stdin.read()",
         str(unit / "docs-00002.parquet")],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert live_child.stdout is not None
        live = Path(live_child.stdout.readline().decode().strip())
        assert dead.is_file() and live.is_file()

        assert sweep_stale_tmp(tmp_path) == [dead]

        assert not dead.exists()
        assert mine.is_file() and live.is_file() and other.is_file()
    finally:
        live_child.communicate(b"")
    # Once that writer has exited too, its file goes on the next sweep.
    assert sweep_stale_tmp(tmp_path) == [live]
    assert sorted(p.name for p in unit.iterdir()) == sorted([mine.name, other.name])


def test_temp_names_carry_pid_and_differ_per_call(tmp_path: Path) -> None:
    target = tmp_path / "x.parquet"
    names = {temp_name(target).name for _ in range(100)}
    assert len(names) == 100
    assert all(f"-{os.getpid()}-" in n and n.startswith(".x.parquet.") for n in names)
