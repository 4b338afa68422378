"""Links between Prefect and MLflow: run tags pointing at the flow run, link artifacts back, and
the registration of models (a pre-trained variant, a sweep's selected point)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL

from mediswift.config import PipelineConfig
from mediswift.export import SOFT_PROMPT_FILE, export_model
from mediswift.tracking import (
    find_registered,
    log_hf_model,
    log_report_run,
    mlflow_ui_base,
    resolve_tracking_uri,
    set_aliases,
    set_version_tags,
)


def flow_run_tags() -> dict[str, str]:
    """MLflow tags naming the Prefect flow run (and its UI page when a server is known)."""
    run_id = flow_run.get_id()
    if not run_id:
        return {}
    tags = {"prefect.flow_run_id": str(run_id), "prefect.flow_run_name": str(flow_run.get_name())}
    ui = PREFECT_UI_URL.value()
    if ui:
        tags["prefect.flow_run_url"] = f"{ui.rstrip('/')}/runs/flow-run/{run_id}"
    return tags


def link_mlflow_run(run_id: str, experiment_id: str, tracking_uri: str, label: str) -> None:
    """A Prefect link artifact pointing at an MLflow run (its UI page, or its store URI)."""
    ui = mlflow_ui_base()
    link = (
        f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        if ui
        else f"{tracking_uri}#runs/{run_id}"
    )
    create_link_artifact(link=link, link_text=f"MLflow run: {label}", description=label)


def log_report(cfg: PipelineConfig, home: Path, folder: Path) -> str:
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, home)
    return log_report_run(uri, cfg.tracking.finetune_experiment, home, folder, flow_run_tags())


def models_available() -> bool:
    """Whether models can be logged: the transformers flavour needs the `hf` extra."""
    return importlib.util.find_spec("transformers") is not None


MODELS_MISSING = (
    "transformers is not installed (pip install -e '.[hf]'): no MLflow model is logged or "
    "registered"
)

# A pre-trained model's input example: the start of a biomedical sentence to continue.
PRETRAIN_EXAMPLE = "Aspirin reduces the risk of"


@task(
    name="register-model",
    task_run_name="register-{name}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def register_model(
    tracking_uri: str,
    run_id: str,
    name: str,
    checkpoint: str,
    tokenizer_dir: str,
    card: dict[str, Any],
    prompt: str | None = None,
    input_example: str = PRETRAIN_EXAMPLE,
    trained_len: int | None = None,
    aliases: list[str] | None = None,
    tags: dict[str, str] | None = None,
    description: str | None = None,
    source_budget: int | None = None,
    max_new_tokens: int | None = None,
) -> dict[str, str | None]:
    """The MLflow model of run `run_id`, registered as a version of `name`, with `aliases` on it.

    A run that registered its model before keeps that version (only the aliases move to it):
    stages call this on every run, the export and upload happen once per run. Otherwise the
    checkpoint is exported as a Hugging Face directory (a temporary one, named `name`: the
    tokenizer's code is cached under that name by transformers) and logged from there, with
    the `trained_len` positions the weights were trained on (None: all of the checkpoint's).
    A fine-tuned point (`prompt`) generates as it was evaluated: its source cut to
    `source_budget` tokens, at most `max_new_tokens` generated (its unit manifest's).
    """
    ref = find_registered(tracking_uri, run_id, name)
    if ref is not None:
        set_aliases(tracking_uri, ref, aliases or [])
        if tags:
            set_version_tags(tracking_uri, ref, tags)
    else:
        with tempfile.TemporaryDirectory(prefix="mediswift-export-") as tmp:
            hf = export_model(
                Path(checkpoint),
                Path(tokenizer_dir),
                Path(tmp) / name,
                card,
                Path(prompt) if prompt else None,
                trained_len,
                source_budget=source_budget,
                max_new_tokens=max_new_tokens,
            )
            extra = [hf / "README.md"] + ([hf / SOFT_PROMPT_FILE] if prompt else [])
            ref = log_hf_model(
                tracking_uri,
                run_id,
                hf,
                name,
                input_example=input_example,
                aliases=aliases or [],
                tags=tags,
                description=description,
                extra_files=extra,
            )
    return {"name": ref.name, "version": ref.version, "model_id": ref.model_id, "uri": ref.uri}
