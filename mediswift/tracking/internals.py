"""The MLflow internals this project relies on, in one place: MLflow has no public API for
these two needs (checked by tests/test_mlflow_internals.py, which fails when MLflow changes
under them).

- The process-wide tracking URI that fluent calls use (`mlflow.set_tracking_uri` has no
  getter that tells "unset" from the default): read to restore it after a flavour's
  `log_model`, which takes no client.
- The process-wide cache of artifact repositories (by run and model id): dropped after a home
  store moves, since this process may have used the runs at their old location."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def fluent_store(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to `uri` for the flavour's `log_model` (which
    takes no client), then restored, `MLFLOW_TRACKING_URI` included."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = tracking_utils._tracking_uri
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]  # None: unset
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def forget_artifact_repos() -> None:
    """Drop MLflow's process-wide cache of artifact repositories (by run and model id): this
    process may have used the runs at their old location."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    cache = getattr(tracking_utils, "_artifact_repos_cache", None)
    if cache is not None:
        cache.clear()
