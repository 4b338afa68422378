"""The MLflow internals `mediswift.tracking.internals` relies on still exist and still mean
what it uses them for: this fails first when an MLflow release changes them."""

from __future__ import annotations

import os

import mlflow
from mlflow.tracking._tracking_service import utils as tracking_utils

from mediswift.tracking.internals import fluent_store, forget_artifact_repos


def test_the_fluent_tracking_uri_is_where_mlflow_keeps_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = tracking_utils._tracking_uri
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with fluent_store(uri):
        assert mlflow.get_tracking_uri() == uri
        assert tracking_utils._tracking_uri == uri
    assert tracking_utils._tracking_uri == before
    assert "MLFLOW_TRACKING_URI" not in os.environ or before is not None


def test_the_artifact_repository_cache_can_be_dropped():
    cache = tracking_utils._artifact_repos_cache
    assert hasattr(cache, "clear")
    cache["a-run-id"] = object()
    forget_artifact_repos()
    assert "a-run-id" not in cache
