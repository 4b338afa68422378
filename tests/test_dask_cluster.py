"""The data stages on a live Dask cluster: a real scheduler and two worker processes on
loopback run the unit tasks of download, parse, filter and tokenize, and every output is
byte-identical to a local run's."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flows.pipeline import mediswift
from flows.registry import plan
from mediswift.config import load_recipe
from mediswift.overrides import Overrides

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "tests" / "recipes" / "tiny.yaml")
STAGES = ["download", "parse", "filter", "vocab", "tokenize"]
pytestmark = pytest.mark.slow


def _files(home: Path, stages: list[str]) -> dict[str, str]:
    """Every file the stages' units wrote (name -> sha256), manifests included."""
    out = {}
    for stage in stages:
        for p in sorted((home / stage).rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                out[str(p.relative_to(home))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_data_stages_on_a_dask_cluster_equal_a_local_run(
    prefect_harness, mirror_dir: Path, tmp_path: Path
) -> None:
    from distributed import Client, LocalCluster

    local = tmp_path / "local"
    mediswift(TINY, STAGES, None, str(local), str(mirror_dir))
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        on_dask = Overrides(
            extra={"executor": {"kind": "dask", "address": cluster.scheduler_address}}
        )
        remote = tmp_path / "remote"
        mediswift(TINY, STAGES, on_dask, str(remote), str(mirror_dir))
        # The unit tasks ran on the cluster: the scheduler moved them through their states
        # (released -> waiting -> processing -> memory: at least 3 transitions each).
        transitions = client.run_on_scheduler(
            lambda dask_scheduler: dask_scheduler.transition_counter
        )
        units = sum(1 for _ in remote.glob("*/units/*/manifest.json"))
        assert transitions >= 3 * (units - 2), (transitions, units)  # all but vocab's units
    cfg = load_recipe(TINY, mirror=str(mirror_dir))
    assert {s: a.key for s, a in plan(cfg, local).items()} == {
        s: a.key for s, a in plan(cfg, remote).items()
    }
    # The manifests name the home they live in only by relative paths: same bytes everywhere.
    assert _files(remote, ["raw", *STAGES]) == _files(local, ["raw", *STAGES])
