"""Which MLflow store a run of a home uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediswift.tracking import resolve_tracking_uri
from mediswift.tracking.uris import default_tracking_uri


def test_a_served_store_is_used_by_runs_of_its_home_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, other = tmp_path / "served", tmp_path / "other"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("MEDISWIFT_HOME", str(served))
    assert resolve_tracking_uri(None, served) == "http://127.0.0.1:5000"
    # A deployment run whose `home` parameter names another home logs into that home's store.
    assert resolve_tracking_uri(None, other) == default_tracking_uri(other)
    # A recipe's own URI wins; without MEDISWIFT_HOME the environment's URI applies to any home.
    assert resolve_tracking_uri("sqlite:///x.db", other) == "sqlite:///x.db"
    monkeypatch.delenv("MEDISWIFT_HOME")
    assert resolve_tracking_uri(None, other) == "http://127.0.0.1:5000"
