"""Models and the registry: `log_hf_model` logs an exported Hugging Face directory
(`mediswift.export`) as an MLflow model of the transformers flavour in a run, registers it
and sets aliases; it does so once per run (the run is tagged with the version it produced).
Registered names are the models' own (`mediswift.names.model_name`).

A fine-tuned point's export is a model class of ours (`MediSwiftPromptedLM`, shipped in the
export as code) that puts the point's soft prompt after the source in `generate`: the flavour
saves that code with the model and loads it back with `trust_remote_code`, so the model's
pyfunc (a text-generation pipeline) generates as the pipeline evaluated the point. The
flavour is kept rather than a pyfunc of our own: `mlflow.transformers.load_model` still gives
the model and tokenizer, the pyfunc is the flavour's, and nothing is pickled (the flavour
saves with `save_pretrained`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from mediswift.tracking.internals import fluent_store

log = logging.getLogger(__name__)

# The run tag naming the model version a run produced (`<name>/<version>`).
MODEL_TAG = "mediswift.registered_model"

# Model logging changes process-wide MLflow state (the fluent tracking URI) and Hub settings:
# one at a time.
_MODEL_LOCK = threading.Lock()
ALIAS_RE = re.compile(r"[^\w-]+")
LICENSE_FILE = "LICENSE.txt"  # what the transformers flavour writes (a Hub-repository text)
HF_CARD = "README.md"


@dataclass(frozen=True)
class ModelVersionRef:
    """A registered model version (and the logged model behind it)."""

    name: str
    version: str
    model_id: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def recipe_alias(recipe: str) -> str:
    """The alias that marks a recipe's newest version (`recipe-<name>`; aliases allow only
    letters, digits, '_' and '-', and `latest`/`v<n>` are reserved, hence the prefix)."""
    return "recipe-" + ALIAS_RE.sub("-", recipe).strip("-")


def find_registered(tracking_uri: str, run_id: str, name: str) -> ModelVersionRef | None:
    """The version of `name` that `run_id` registered earlier, if it still exists: a run logs
    its model once, however often its stage runs."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    tag = client.get_run(run_id).data.tags.get(MODEL_TAG, "")
    tagged, _, version = tag.rpartition("/")
    if tagged != name or not version:
        return None
    try:
        mv = client.get_model_version(name, version)
    except MlflowException:
        return None
    model_id = getattr(mv, "model_id", None) or _model_id_of(mv.source)
    return ModelVersionRef(name, version, model_id)


def _model_id_of(source: str | None) -> str | None:
    """`m-...` of a version's source `models:/m-...` (what MLflow 3 registers)."""
    if source and source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/", 1)[0]
    return None


def set_aliases(tracking_uri: str, ref: ModelVersionRef, aliases: Sequence[str]) -> None:
    """Point each alias of `ref.name` at `ref.version` (moving it from an older version).

    On a tracking server shared by several homes, two runs may set the same alias of one
    model at once: the store reads, then inserts or updates, and the slower insert fails on
    the key the faster one wrote. Setting it again then updates that row: the alias ends on
    the version set last, as with one writer."""
    client = MlflowClient(tracking_uri)
    for alias in aliases:
        _retry_on_collision(
            lambda a=alias: client.set_registered_model_alias(ref.name, a, ref.version)
        )


# What a store's failed insert of a row another writer made meanwhile comes back as, through a
# server (a database integrity error, answered 400) or from a local store.
_COLLISIONS = frozenset({"BAD_REQUEST", "RESOURCE_ALREADY_EXISTS", "TEMPORARILY_UNAVAILABLE"})


def _retry_on_collision(call: Any, attempts: int = 5) -> Any:
    """`call()`, again after a short wait when it collided with a concurrent writer."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return call()
        except MlflowException as e:
            if e.error_code not in _COLLISIONS or attempt == attempts - 1:
                raise
            log.info("mlflow: %s; trying again", str(e).splitlines()[0][:200])
            time.sleep(0.2 * (attempt + 1))
    return None


def set_version_tags(tracking_uri: str, ref: ModelVersionRef, tags: dict[str, Any]) -> None:
    client = MlflowClient(tracking_uri)
    for k, v in tags.items():
        client.set_model_version_tag(ref.name, ref.version, k, str(v))


def log_hf_model(
    tracking_uri: str,
    run_id: str,
    hf_dir: Path,
    name: str,
    *,
    input_example: str,
    aliases: Sequence[str] = (),
    tags: dict[str, Any] | None = None,
    description: str | None = None,
    extra_files: Sequence[Path] = (),
    max_new_tokens: int | None = None,
) -> ModelVersionRef:
    """Log the Hugging Face directory `hf_dir` (a `mediswift.export` output) as the
    transformers-flavour model of run `run_id`, register it as a new version of `name`, point
    `aliases` at it and tag the run with it.

    The model and tokenizer are loaded from `hf_dir` (the tokenizer runs the directory's own
    code) and logged as a text-generation pipeline, with `input_example` and an explicit
    signature (a string in, a string out, `max_new_tokens` as a parameter, by default the
    directory's generation length). A fine-tuned point (a model carrying a soft prompt) answers
    with the generated sentence alone, as the pipeline's own prediction reads (`model_config`:
    no source in the answer, no leading space). Nothing is fetched
    from the Hugging Face Hub: the directory is complete, and the flavour's Hub lookups (card,
    licence) are kept offline. `extra_files` (the card, a soft prompt) are added to the
    model's artifacts beside `MLmodel`; the card's licence section replaces the flavour's
    Hub-repository licence text.
    """
    hf_dir = Path(hf_dir)
    client = MlflowClient(tracking_uri)
    info = _log_pipeline(client, tracking_uri, run_id, hf_dir, name, input_example, tags,
                         max_new_tokens)  # fmt: skip
    ref = ModelVersionRef(name, str(info.registered_model_version), info.model_id)
    _add_model_files(client, ref, hf_dir, extra_files)
    if description:
        client.update_model_version(name, ref.version, description=description)
    if tags:
        set_version_tags(tracking_uri, ref, tags)
    set_aliases(tracking_uri, ref, aliases)
    client.set_tag(run_id, MODEL_TAG, f"{name}/{ref.version}")
    return ref


def _log_pipeline(
    client: MlflowClient,
    tracking_uri: str,
    run_id: str,
    hf_dir: Path,
    name: str,
    input_example: str,
    tags: dict[str, Any] | None,
    max_new_tokens: int | None,
) -> Any:
    """The transformers-flavour model of `hf_dir`, logged into run `run_id` and registered as
    a version of `name` (see `log_hf_model`); MLflow's model info."""
    import mlflow

    with (
        _MODEL_LOCK,
        _hub_offline(),
        _quiet_transformers(),
        _registry_prints_logged(),
        fluent_store(tracking_uri),
    ):
        components = _load_pipeline_parts(hf_dir, name)
        max_new_tokens = max_new_tokens or _generation_length(components["model"])
        with _reopened_run(client, run_id):
            return mlflow.transformers.log_model(
                transformers_model=components,
                name="model",
                task="text-generation",
                input_example=input_example,
                signature=text_generation_signature(max_new_tokens),
                model_config=_answer_config(components["model"]),
                model_card=_hf_card(hf_dir),
                pip_requirements=_requirements(),
                registered_model_name=name,
                tags={k: str(v) for k, v in (tags or {}).items()},
                metadata={"mediswift": {"registered_model": name}},
            )


def text_generation_signature(max_new_tokens: int) -> Any:
    """A string prompt in, the generated string out; `max_new_tokens` as an inference param."""
    from mlflow.models import infer_signature

    return infer_signature(
        "prompt",
        "generated text",
        params={"max_new_tokens": max_new_tokens, "do_sample": False},
    )


def _load_pipeline_parts(hf_dir: Path, name: str) -> dict[str, Any]:
    """The model and tokenizer of `hf_dir`, named `name` (their name is recorded in the model's
    flavour configuration: a registry name, not a path of this machine). Both may be code of
    the export (a fine-tuned point's model class, the tokenizer): ours, hence trusted."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        hf_dir, trust_remote_code=True, local_files_only=True
    )
    tok = transformers.AutoTokenizer.from_pretrained(
        hf_dir, trust_remote_code=True, local_files_only=True
    )
    model.config._name_or_path = name
    model.name_or_path = name
    tok.name_or_path = name
    return {"model": model.eval(), "tokenizer": tok}


def _generation_length(model: Any) -> int:
    """The export's own generation length (a fine-tuned point's), else 16 tokens."""
    return int(getattr(model.generation_config, "max_new_tokens", None) or 16)


def _answer_config(model: Any) -> dict[str, Any]:
    """The pipeline settings of a model: a fine-tuned point answers with its generated sentence
    alone (not the source before it), read as the pipeline's prediction reads it, without the
    space the tokenizer keeps before a continuation (`collapse_whitespace` strips it; decoded
    text has single spaces only). A pre-trained model returns the prompt and its continuation."""
    prompted = getattr(model.config, "soft_prompt_tokens", None) is not None
    return {"return_full_text": False, "collapse_whitespace": True} if prompted else {}


def _hf_card(hf_dir: Path) -> Any:
    from huggingface_hub import ModelCard

    card = hf_dir / HF_CARD
    return ModelCard.load(card) if card.is_file() else None


def _requirements() -> list[str]:
    """What loading the model needs, pinned to what logged it (inferring them would load the
    model once more in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in (
        "mlflow",
        "transformers",
        "torch",
        "safetensors",
        "sentencepiece",
        "sacremoses",
    ):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out


def _add_model_files(
    client: MlflowClient, ref: ModelVersionRef, hf_dir: Path, extra: Sequence[Path]
) -> None:
    """The extra files into the logged model's artifacts, and the card's licence section as
    its LICENSE.txt."""
    if ref.model_id is None:
        return
    for path in extra:
        client.log_model_artifact(ref.model_id, str(path))
    card = hf_dir / HF_CARD
    section = _licence_section(card.read_text(encoding="utf-8")) if card.is_file() else ""
    if section:
        with _scratch_dir() as tmp:
            licence = Path(tmp) / LICENSE_FILE
            licence.write_text(section, encoding="utf-8")
            client.log_model_artifact(ref.model_id, str(licence))


def _licence_section(card: str) -> str:
    """The `## Licence ...` section of a model card, heading included ('' if none)."""
    m = re.search(r"^## Licen[cs]e.*?(?=^## |\Z)", card, flags=re.MULTILINE | re.DOTALL)
    return m.group(0).strip() + "\n" if m else ""


@contextlib.contextmanager
def _scratch_dir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mediswift-") as tmp:
        yield tmp


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """No Hugging Face Hub request while logging: the flavour looks up a card and a licence
    repository by the model's name, which is ours, not a Hub repository."""
    import huggingface_hub.constants as hub

    previous = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = previous


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bars or licence warnings on the console while logging a
    model: the pipeline's console is one line per step, not per weight file."""
    import logging

    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    flavour = logging.getLogger("mlflow.transformers")
    level = flavour.level
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    flavour.setLevel(logging.ERROR)
    try:
        yield
    finally:
        flavour.setLevel(level)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _registry_prints_logged() -> Iterator[None]:
    """MLflow prints "Successfully registered model ..." and "Created version ..." straight to
    stderr, without a time, for every model: those lines go to this module's log instead (the
    run's log file, timestamped), and the stage logs its own line per model. Whatever else was
    written to stderr meanwhile is logged too, at WARNING, so that nothing is lost."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            yield
    finally:
        for line in filter(str.strip, buf.getvalue().splitlines()):
            routine = line.startswith(("Successfully registered model", "Created version"))
            log.log(logging.INFO if routine else logging.WARNING, "mlflow: %s", line)


@contextlib.contextmanager
def _reopened_run(client: MlflowClient, run_id: str) -> Iterator[None]:
    """`run_id` as this thread's active run (so the model goes into the run's experiment),
    ending with the status and end time it had (its duration stays the training's)."""
    import mlflow

    info = client.get_run(run_id).info
    status, end_time = info.status, info.end_time
    mlflow.start_run(run_id=run_id)
    try:
        yield
    except BaseException:
        mlflow.end_run(status=status if status != "RUNNING" else "FAILED")
        raise
    mlflow.end_run(status=status if status != "RUNNING" else "FINISHED")
    if status != "RUNNING" and end_time:
        client.set_terminated(run_id, status=status, end_time=end_time)
