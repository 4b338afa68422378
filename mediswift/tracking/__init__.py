"""MLflow for the pipeline: the only package that imports mlflow.

uris       where runs are tracked (the home's SQLite store by default), URIs relative to a home
runs       runs with batched metrics, params, tags, dataset inputs and artifacts
store      a home's own store made relocatable (a copied or moved home keeps its runs)
registry   exported models logged (transformers flavour), registered and aliased
internals  the MLflow internals relied on, in one place (no public API covers them)

Runs are tagged with the Prefect flow run that produced them when the caller passes its id
and URL.
"""

from mediswift.tracking.registry import (
    MODEL_TAG,
    ModelVersionRef,
    find_registered,
    log_hf_model,
    recipe_alias,
    set_aliases,
    set_version_tags,
    text_generation_signature,
)
from mediswift.tracking.runs import (
    NOTE_TAG,
    DatasetRef,
    RunLogger,
    Tracker,
    flatten,
    log_report_run,
)
from mediswift.tracking.store import adopt_home_store, adopt_home_store_if_default
from mediswift.tracking.uris import (
    ARTIFACTS_DIR,
    HOME_DB,
    default_tracking_uri,
    mlflow_ui_base,
    portable_tracking_uri,
    resolve_tracking_uri,
    tracking_uri_in,
)

__all__ = [
    "ARTIFACTS_DIR",
    "HOME_DB",
    "MODEL_TAG",
    "NOTE_TAG",
    "DatasetRef",
    "ModelVersionRef",
    "RunLogger",
    "Tracker",
    "adopt_home_store",
    "adopt_home_store_if_default",
    "default_tracking_uri",
    "find_registered",
    "flatten",
    "log_hf_model",
    "log_report_run",
    "mlflow_ui_base",
    "portable_tracking_uri",
    "recipe_alias",
    "resolve_tracking_uri",
    "set_aliases",
    "set_version_tags",
    "text_generation_signature",
    "tracking_uri_in",
]
