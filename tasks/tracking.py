"""Links between Prefect and MLflow: run tags pointing at the flow run, link artifacts back, and
the registration of models (a pre-trained variant, a sweep's selected point)."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.settings import PREFECT_HOME, PREFECT_UI_URL

from mediswift.config import PipelineConfig
from mediswift.export import SOFT_PROMPT_FILE, export_model
from mediswift.manifests import FlowRunRef, ModelRegistration, RegisteredModel
from mediswift.tracking import (
    NOTE_TAG,
    ModelVersionRef,
    adopt_home_store_if_default,
    find_registered,
    log_hf_model,
    log_report_run,
    mlflow_ui_base,
    resolve_tracking_uri,
    set_aliases,
    set_version_tags,
)


def flow_run_tags() -> dict[str, str]:
    """MLflow tags naming the Prefect flow run, and a description (the note the MLflow UI
    shows) that links it: its page on the server it runs on, or the command that reopens the
    database a temporary server kept it in."""
    ref = flow_run_ref()
    if ref is None:
        return {}
    tags = {"prefect.flow_run_id": ref.id, "prefect.flow_run_name": ref.name}
    page = f"{(ref.ui or PREFECT_DEFAULT_UI).rstrip('/')}/runs/flow-run/{ref.id}"
    if ref.ui:
        tags["prefect.flow_run_url"] = page
        tags[NOTE_TAG] = f"Prefect flow run: [{ref.name}]({page})"
    else:
        tags[NOTE_TAG] = (
            f"Prefect flow run {ref.name}, kept by the temporary server of its run: start "
            f'`PREFECT_HOME="{ref.prefect_home}" .venv/bin/prefect server start --host '
            f"127.0.0.1 --port 4200` from the project root, then open {page}"
        )
    return tags


PREFECT_DEFAULT_UI = "http://127.0.0.1:4200"  # where `prefect server start` listens


def flow_run_ref() -> FlowRunRef | None:
    """This flow run, and the server or the PREFECT_HOME that keeps it (None outside a run)."""
    run_id = flow_run.get_id()
    if not run_id:
        return None
    return FlowRunRef(
        id=str(run_id),
        name=str(flow_run.get_name()),
        ui=PREFECT_UI_URL.value() or None,
        prefect_home=str(PREFECT_HOME.value()),
    )


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


def use_home_store(cfg: PipelineConfig, home: Path) -> None:
    """Point MLflow at the home's own store when the recipe names no tracking URI (with a
    one-line warning when several pre-training nodes would write it over a network file
    system)."""
    adopt_home_store_if_default(cfg.tracking.tracking_uri, home, nnodes=cfg.pretrain.nnodes)


def models_available() -> bool:
    """Whether models can be logged: the transformers flavour needs the `hf` extra."""
    return importlib.util.find_spec("transformers") is not None


MODELS_MISSING = (
    "transformers is not installed (pip install -e '.[hf]'): no MLflow model is logged or "
    "registered"
)


@task(
    name="register-model",
    task_run_name="register-{reg.name}",
    cache_policy=NO_CACHE,
    persist_result=False,
)
def register_model(reg: ModelRegistration) -> RegisteredModel:
    """The MLflow model of run `reg.run_id`, registered as a version of `reg.name`, with
    `reg.aliases` on it.

    A run that registered its model before keeps that version (only the aliases move to it):
    stages call this on every run, the export and upload happen once per run. Otherwise the
    checkpoint is exported as a Hugging Face directory (a temporary one, named as the model:
    the tokenizer's code is cached under that name by transformers) and logged from there, with
    the `trained_len` positions the weights were trained on (None: all of the checkpoint's).
    A fine-tuned point (`prompt`) generates as it was evaluated: its source cut to
    `source_budget` tokens, at most `max_new_tokens` generated (its unit manifest's).
    """
    ref = find_registered(reg.tracking_uri, reg.run_id, reg.name)
    if ref is not None:
        set_aliases(reg.tracking_uri, ref, reg.aliases)
        if reg.tags:
            set_version_tags(reg.tracking_uri, ref, reg.tags)
    else:
        ref = _export_and_log(reg)
    return RegisteredModel(name=ref.name, version=ref.version, model_id=ref.model_id, uri=ref.uri)


def _export_and_log(reg: ModelRegistration) -> ModelVersionRef:
    prompt = Path(reg.prompt) if reg.prompt else None
    with tempfile.TemporaryDirectory(prefix="mediswift-export-") as tmp:
        hf = export_model(
            Path(reg.checkpoint),
            Path(reg.tokenizer_dir),
            Path(tmp) / reg.name,
            reg.card,
            prompt,
            reg.trained_len,
            source_budget=reg.source_budget,
            max_new_tokens=reg.max_new_tokens,
        )
        extra = [hf / "README.md"] + ([hf / SOFT_PROMPT_FILE] if prompt else [])
        return log_hf_model(
            reg.tracking_uri,
            reg.run_id,
            hf,
            reg.name,
            input_example=reg.input_example,
            aliases=reg.aliases,
            tags=reg.tags or None,
            description=reg.description,
            extra_files=extra,
        )


def register_models(regs: list[ModelRegistration]) -> list[RegisteredModel]:
    """Register each model, one at a time (each writes the registry)."""
    return [register_model.submit(reg).result() for reg in regs]
