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


def pytest_collection_modifyitems(config, items):
    """Tests that use the Prefect server are marked `server` (left out of `make test-fast`)."""
    for item in items:
        if "prefect_harness" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)


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
