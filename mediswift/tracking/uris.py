"""Where runs are tracked: the home's own SQLite store by default, a server or any URI the
recipe names; URIs written relative to the home so a home can move."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

HOME_DB = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
SQLITE_PREFIX = "sqlite:///"


def default_tracking_uri(home: Path) -> str:
    """SQLite under the artifact root, as an absolute URI."""
    home.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{(home / HOME_DB).resolve()}"


def portable_tracking_uri(uri: str, home: Path) -> str | None:
    """None for the home's own store, else `uri`: what a unit spec written into the home keeps,
    so that the home names no absolute path of its own (see `tracking_uri_in`)."""
    db = sqlite_path(uri)
    if db is not None and db.resolve() == (home / HOME_DB).resolve():
        return None
    return uri


def tracking_uri_in(uri: str | None, home: Path) -> str:
    """The tracking URI a unit spec means: its own, or the store of the home it runs in."""
    return uri or default_tracking_uri(home)


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0])


def is_server(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https", "databricks")


def resolve_tracking_uri(configured: str | None, home: Path) -> str:
    """The recipe's URI, else MLFLOW_TRACKING_URI, else SQLite under the artifact root.

    MLFLOW_TRACKING_URI is the store of the home named by MEDISWIFT_HOME when both are set (a
    served home: `make serve` sets both): a run for another home uses that home's own store,
    so runs of two homes never mix in one store."""
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env_store_is_for(home):
        return env
    return default_tracking_uri(home)


def env_store_is_for(home: Path) -> bool:
    """Whether MLFLOW_TRACKING_URI belongs to `home` (MEDISWIFT_HOME unset, or that home)."""
    served = os.environ.get("MEDISWIFT_HOME")
    return not served or Path(served).resolve() == Path(home).resolve()


def mlflow_ui_base() -> str | None:
    """Where a person opens the MLflow UI (set by `make serve`), for links from Prefect."""
    return os.environ.get("MEDISWIFT_MLFLOW_UI")
