"""Shared fixtures: the offline mirror and the raw real files it was built from."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MEDISWIFT_SHARED", REPO.parent / "shared"))
# Tests never reach the Hugging Face hub, and the tokenizer code transformers copies out of an
# export goes to a temporary folder, not the user's ~/.cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if "HF_MODULES_CACHE" not in os.environ:
    os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="mediswift-hf-modules-")
    atexit.register(shutil.rmtree, os.environ["HF_MODULES_CACHE"], ignore_errors=True)
# One torch (OpenMP) thread per process, here and in every process a test starts (the CLI, its
# pools, torchrun, Prefect workers): two test workers share 2 cores, and two processes of 2
# threads each on 2 cores spin against each other: two tiny variants of 300 pre-training steps
# took 300 s with torch's default 2 threads beside a 2-thread job, 40 s with one. Set before
# torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    path = SHARED / "mirror"
    if not path.is_dir():
        pytest.skip("the offline mirror (../shared/mirror) is not present")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("the shared raw data (../shared/data) is not present")
    return path


# The longest test files, longest first (seconds on 2 cores in a full run, an ordering hint only:
# no test asserts a time). `make test` hands whole files to two workers as they free up, so
# starting with the longest ones keeps one worker from running a long file alone at the end.
LONGEST_FILES = {
    "test_fault_matrix.py": 400,
    "test_repro_claims_gpu.py": 300,
    "test_readme_walk.py": 260,
    "test_deployment_e2e.py": 220,
    "test_team_servers.py": 200,
    "test_cli_errors.py": 155,
    "test_hostile_memory.py": 125,
    "test_home_lock.py": 120,
    "test_ddp.py": 95,
    "test_gpu_path.py": 95,
    "test_relocatable_home.py": 80,
    "test_multinode.py": 75,
    "test_export.py": 60,
    "test_pipeline_flow.py": 50,
    "test_dask_cluster.py": 50,
    "test_checkpoint_resume.py": 45,
}


def pytest_collection_modifyitems(config, items):
    """Tests that use the Prefect server are marked `server` (left out of `make test-fast`);
    the longest files are collected first (see LONGEST_FILES)."""
    for item in items:
        if "prefect_harness" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)
    items.sort(key=lambda item: -LONGEST_FILES.get(item.path.name, 0))  # stable: order kept


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every flow test of the session (it takes tens of
    seconds to start on a busy 2-core machine, so it is shared)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture()
def one_torch_thread():
    """Tiny models run fastest on one thread (and do not stall when the cores are shared)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
