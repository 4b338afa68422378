"""MLflow logging for the pipeline: the only module that imports mlflow.

Metrics are buffered and sent in batches (one `log_batch` call per flush) so that a training
loop logging every few steps does not pay a round trip per value. Runs are tagged with the
Prefect flow run that produced them when the caller passes its id and URL.

The home's own store (`<home>/mlflow.db`, artifacts under `<home>/mlruns`) is relocatable:
MLflow can only record absolute artifact locations, so when a home has been copied or moved,
the first `Tracker` that opens it re-points every location that names the old `mlruns` folder
at this one (`adopt_home_store`). Against a tracking server, experiments get the server's
default location instead (proxied `mlflow-artifacts:`), so clients never write outside the
server's artifact root.

Models: `log_hf_model` logs an exported Hugging Face directory (`mediswift.export`) as an
MLflow model of the transformers flavour in a run, registers it and sets aliases; it does so
once per run (the run is tagged with the version it produced).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

HOME_DB = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
SQLITE_PREFIX = "sqlite:///"
# The run tag naming the model version a run produced (`<name>/<version>`).
MODEL_TAG = "mediswift.registered_model"
NOTE_TAG = "mlflow.note.content"  # the run's description, rendered as Markdown by the UI


def default_tracking_uri(home: Path) -> str:
    """SQLite under the artifact root, as an absolute URI."""
    home.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{(home / HOME_DB).resolve()}"


def portable_tracking_uri(uri: str, home: Path) -> str | None:
    """None for the home's own store, else `uri`: what a unit spec written into the home keeps,
    so that the home names no absolute path of its own (see `tracking_uri_in`)."""
    db = _sqlite_path(uri)
    if db is not None and db.resolve() == (home / HOME_DB).resolve():
        return None
    return uri


def tracking_uri_in(uri: str | None, home: Path) -> str:
    """The tracking URI a unit spec means: its own, or the store of the home it runs in."""
    return uri or default_tracking_uri(home)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return Path(uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0])


def _is_server(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https", "databricks")


@dataclass(frozen=True)
class DatasetRef:
    """A dataset a run consumed, named by content: `digest` is its content key and `source`
    its folder relative to the home (a location that stays true when the home moves)."""

    name: str
    digest: str
    source: str
    context: str  # training, validation, test, corpus
    profile: dict[str, Any] = field(default_factory=dict)


_INPUTS_LOCK = threading.Lock()


class RunLogger:
    """One MLflow run: params once, metrics batched, artifacts as files."""

    def __init__(self, client: MlflowClient, run_id: str, flush_every: int = 200):
        self.client = client
        self.run_id = run_id
        self._buffer: list[Metric] = []
        self._flush_every = flush_every

    def log_params(self, params: dict[str, Any]) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if len(self._buffer) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        while self._buffer:
            chunk, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_datasets(self, datasets: Sequence[DatasetRef]) -> None:
        """Record the datasets as the run's inputs (the UI's "Datasets used").

        A dataset is stored once per experiment, by (name, digest), and the store checks then
        inserts: two runs logging a new one at once (grid points in threads, or processes) can
        collide. So this process logs one at a time, and a collision is retried once (the
        dataset then exists, and the run is linked to it)."""
        if not datasets:
            return
        from mlflow.exceptions import MlflowException

        inputs = [dataset_input(d) for d in datasets]
        with _INPUTS_LOCK:
            try:
                self.client.log_inputs(self.run_id, datasets=inputs)
            except MlflowException:
                time.sleep(0.5)
                self.client.log_inputs(self.run_id, datasets=inputs)


def dataset_input(d: DatasetRef) -> DatasetInput:
    """`d` as MLflow's input entity: a local source whose URI is relative to the home."""
    entity = Dataset(
        name=d.name,
        digest=d.digest,
        source_type="local",
        source=json.dumps({"uri": d.source}),
        profile=json.dumps(d.profile, sort_keys=True) if d.profile else None,
    )
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", d.context)])


class Tracker:
    """An experiment in an MLflow tracking store.

    `artifact_root` (`<home>/mlruns`) is where a local store keeps artifacts; opening the home's
    own store re-points it first when the home has moved. Against a server it is not used.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        local_root = None if _is_server(tracking_uri) else artifact_root
        if local_root is not None and _is_home_store(tracking_uri, local_root):
            adopt_home_store(local_root.parent)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = (local_root / experiment).resolve().as_uri() if local_root else None
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location
            )
        else:
            self.experiment_id = exp.experiment_id

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Iterator[RunLogger]:
        """Start (or reopen, given `run_id`) a run; it ends FINISHED, or FAILED on an error."""
        all_tags = {"mlflow.runName": name, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        logger = RunLogger(self.client, run_id)
        if params:
            logger.log_params(params)
        try:
            yield logger
        except BaseException:
            logger.flush()
            self.client.set_terminated(run_id, status="FAILED")
            raise
        logger.flush()
        self.client.set_terminated(run_id, status="FINISHED")

    def find_run(self, filter_string: str) -> str | None:
        """The id of this experiment's newest run matching `filter_string`, or None."""
        found = self.client.search_runs([self.experiment_id], filter_string, max_results=1)
        return found[0].info.run_id if found else None

    def run_link(self, run_id: str, experiment_id: str | None = None) -> str:
        """A link to a run's page that works inside the MLflow UI, whatever its address."""
        return f"#/experiments/{experiment_id or self.experiment_id}/runs/{run_id}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def resolve_tracking_uri(configured: str | None, home: Path) -> str:
    """The recipe's URI, else MLFLOW_TRACKING_URI, else SQLite under the artifact root."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(home)


def mlflow_ui_base() -> str | None:
    """Where a person opens the MLflow UI (set by `make serve`), for links from Prefect."""
    return os.environ.get("MEDISWIFT_MLFLOW_UI")


def log_report_run(
    tracking_uri: str, experiment: str, home: Path, folder: Path, tags: dict[str, Any]
) -> str:
    """Log the report folder (HTML, Markdown, figures) as one run; returns its id."""
    tracker = Tracker(tracking_uri, experiment, artifact_root=home / ARTIFACTS_DIR)
    with tracker.run("pipeline-report", tags={"mediswift.kind": "report", **tags}) as run:
        for path in sorted(folder.iterdir()):
            run.log_artifact(path, "report")
    return run.run_id


# --- A relocatable home store ----------------------------------------------------------------

_ADOPTED: set[tuple[str, str]] = set()
_ADOPT_LOCK = threading.Lock()
_TEXT_TYPES = ("CHAR", "TEXT", "CLOB", "STRING", "JSON")


def _is_home_store(tracking_uri: str, artifact_root: Path) -> bool:
    db = _sqlite_path(tracking_uri)
    return (
        db is not None
        and artifact_root.name == ARTIFACTS_DIR
        and db.resolve() == (artifact_root.parent / HOME_DB).resolve()
    )


def adopt_home_store_if_default(tracking_uri: str | None, home: Path) -> None:
    """A home copied or moved here: its own MLflow store still names the old place (a store
    the recipe names elsewhere is left alone)."""
    if resolve_tracking_uri(tracking_uri, home) == default_tracking_uri(home):
        adopt_home_store(home)


def adopt_home_store(home: Path) -> dict[str, str]:
    """Re-point the artifact locations of `home`'s own store that name another `mlruns` folder
    (the home was copied or moved) at `<home>/mlruns`; returns {old prefix: new prefix}.

    Why: MLflow keeps absolute locations (experiments, runs, logged models, model versions),
    so a copied home would read and write the old home's artifacts. An experiment location
    `<R>/<name or id>` whose `R` is a folder named `mlruns` other than this home's is taken as
    this home's, moved; every text value of the store that starts with `R` (as a URI or a plain
    path) is rewritten, and the file is vacuumed so the old path is not left in free pages. The
    `MLmodel` files of logged models (which record their own location) are rewritten too. Done
    once per process and home; a store already in place is only read. (The experiment
    `Default`, which MLflow places under the working directory of whoever created the store,
    is brought into the home the same way.)
    """
    home = home.resolve()
    db = home / HOME_DB
    key = (str(db), str(home))
    with _ADOPT_LOCK:
        if key in _ADOPTED or not db.is_file():
            return {}
        with contextlib.closing(sqlite3.connect(db, timeout=120, isolation_level=None)) as con:
            moved = _moved_roots(con, home / ARTIFACTS_DIR)
            if moved:
                _rewrite_prefixes(con, moved)
        if moved:
            _rewrite_model_files(home / ARTIFACTS_DIR, moved)
            _forget_artifact_repos()
        _ADOPTED.add(key)
        return moved


def _moved_roots(con: sqlite3.Connection, root: Path) -> dict[str, str]:
    """{old root: new root} in both spellings (file URI, plain path) of every moved root."""
    rows = con.execute("SELECT experiment_id, name, artifact_location FROM experiments")
    new_uri, new_path = root.as_uri(), str(root)
    moved: dict[str, str] = {}
    for exp_id, name, location in rows:
        if not location or "/" not in location:
            continue
        parent, last = location.rstrip("/").rsplit("/", 1)
        if unquote(last) not in (str(exp_id), name):
            continue  # a location someone chose: not this home's layout
        is_uri = parent.startswith("file:")
        path = unquote(urlparse(parent).path) if is_uri else parent
        if not path.startswith("/") or Path(path).name != ARTIFACTS_DIR or path == new_path:
            continue
        moved[path] = new_path
        moved[Path(path).as_uri()] = new_uri
        if is_uri:
            moved[parent] = new_uri  # as stored (another encoding, or file:/ with one slash)
    return moved


def _rewrite_prefixes(con: sqlite3.Connection, moved: dict[str, str]) -> None:
    """Replace each old prefix (followed by '/' or the end) by its new one in every text
    column of every table, in one transaction; then vacuum."""
    tables = [
        r[0]
        for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not r[0].startswith("sqlite_")
    ]
    con.execute("BEGIN IMMEDIATE")
    try:
        for table in tables:
            for col in _text_columns(con, table):
                for old, new in sorted(moved.items(), key=lambda kv: -len(kv[0])):
                    con.execute(
                        f'UPDATE "{table}" SET "{col}" = ? || substr("{col}", ?) '
                        f'WHERE "{col}" = ? OR substr("{col}", 1, ?) = ?',
                        (new, len(old) + 1, old, len(old) + 1, old + "/"),
                    )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("VACUUM")


def _rewrite_model_files(root: Path, moved: dict[str, str]) -> None:
    """The same prefixes in the `MLmodel` files under `root` (each names its own location)."""
    for path in root.rglob("MLmodel"):
        text = path.read_text(encoding="utf-8")
        new = text
        for old, repl in sorted(moved.items(), key=lambda kv: -len(kv[0])):
            new = re.sub(re.escape(old) + r"(?=/|\s|$)", lambda _m, r=repl: r, new, flags=re.M)
        if new != text:
            tmp = path.with_name(f".{path.name}.relocating")
            tmp.write_text(new, encoding="utf-8")
            os.replace(tmp, path)


def _forget_artifact_repos() -> None:
    """Drop MLflow's process-wide cache of artifact repositories (by run and model id): this
    process may have used the runs at their old location."""
    from mlflow.tracking._tracking_service import utils as tracking_utils

    cache = getattr(tracking_utils, "_artifact_repos_cache", None)
    if cache is not None:
        cache.clear()


def _text_columns(con: sqlite3.Connection, table: str) -> list[str]:
    cols = con.execute(f'PRAGMA table_info("{table}")').fetchall()
    return [c[1] for c in cols if any(t in (c[2] or "").upper() for t in _TEXT_TYPES)]


# --- Models and the registry -----------------------------------------------------------------

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


def registered_model_name(
    size: str, sparsity: float, method: str = "static", task: str | None = None
) -> str:
    """`mediswift-<size>-s<pct>`, then `-<method>` for dynamic sparsity, then `-<task>` for a
    fine-tuned point: one registered model per kind of model, a version per training."""
    name = f"mediswift-{size}-s{round(sparsity * 100)}"
    if sparsity > 0 and method != "static":
        name += f"-{method}"
    return f"{name}-{task}" if task else name


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
    """Point each alias of `ref.name` at `ref.version` (moving it from an older version)."""
    client = MlflowClient(tracking_uri)
    for alias in aliases:
        client.set_registered_model_alias(ref.name, alias, ref.version)


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
    max_new_tokens: int = 16,
) -> ModelVersionRef:
    """Log the Hugging Face directory `hf_dir` (a `mediswift.export` output) as the
    transformers-flavour model of run `run_id`, register it as a new version of `name`, point
    `aliases` at it and tag the run with it.

    The model and tokenizer are loaded from `hf_dir` (the tokenizer runs the directory's own
    code) and logged as a text-generation pipeline, with `input_example` and an explicit
    signature (a string in, a string out, `max_new_tokens` as a parameter). Nothing is fetched
    from the Hugging Face Hub: the directory is complete, and the flavour's Hub lookups (card,
    licence) are kept offline. `extra_files` (the card, a soft prompt) are added to the
    model's artifacts beside `MLmodel`; the card's licence section replaces the flavour's
    Hub-repository licence text.
    """
    import mlflow

    hf_dir = Path(hf_dir)
    client = MlflowClient(tracking_uri)
    with _MODEL_LOCK, _hub_offline(), _quiet_transformers(), _fluent_store(tracking_uri):
        components = _load_pipeline_parts(hf_dir, name)
        with _reopened_run(client, run_id):
            info = mlflow.transformers.log_model(
                transformers_model=components,
                name="model",
                task="text-generation",
                input_example=input_example,
                signature=text_generation_signature(max_new_tokens),
                model_card=_hf_card(hf_dir),
                pip_requirements=_requirements(),
                registered_model_name=name,
                tags={k: str(v) for k, v in (tags or {}).items()},
                metadata={"mediswift": {"registered_model": name}},
            )
    ref = ModelVersionRef(name, str(info.registered_model_version), info.model_id)
    _add_model_files(client, ref, hf_dir, extra_files)
    if description:
        client.update_model_version(name, ref.version, description=description)
    if tags:
        set_version_tags(tracking_uri, ref, tags)
    set_aliases(tracking_uri, ref, aliases)
    client.set_tag(run_id, MODEL_TAG, f"{name}/{ref.version}")
    return ref


def text_generation_signature(max_new_tokens: int) -> Any:
    """A string prompt in, the generated string out; `max_new_tokens` as an inference param."""
    from mlflow.models import infer_signature

    return infer_signature(
        "prompt", "generated text", params={"max_new_tokens": max_new_tokens, "do_sample": False}
    )


def _load_pipeline_parts(hf_dir: Path, name: str) -> dict[str, Any]:
    """The model and tokenizer of `hf_dir`, named `name` (their name is recorded in the model's
    flavour configuration: a registry name, not a path of this machine)."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True)
    tok = transformers.AutoTokenizer.from_pretrained(
        hf_dir, trust_remote_code=True, local_files_only=True
    )
    model.config._name_or_path = name
    model.name_or_path = name
    tok.name_or_path = name
    return {"model": model.eval(), "tokenizer": tok}


def _hf_card(hf_dir: Path) -> Any:
    from huggingface_hub import ModelCard

    card = hf_dir / HF_CARD
    return ModelCard.load(card) if card.is_file() else None


def _requirements() -> list[str]:
    """What loading the model needs, pinned to what logged it (inferring them would load the
    model once more in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mlflow", "transformers", "torch", "safetensors", "sentencepiece", "sacremoses"):
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
    m = re.search(r"^## Licen[cs]e.*?(?=^## |\Z)", card, flags=re.M | re.S)
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
def _fluent_store(uri: str) -> Iterator[None]:
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


@contextlib.contextmanager
def _reopened_run(client: MlflowClient, run_id: str) -> Iterator[None]:
    """`run_id` as this thread's active run (so the model goes into the run's experiment),
    ending with the status it had."""
    import mlflow

    status = client.get_run(run_id).info.status
    mlflow.start_run(run_id=run_id)
    try:
        yield
    except BaseException:
        mlflow.end_run(status=status if status != "RUNNING" else "FAILED")
        raise
    mlflow.end_run(status=status if status != "RUNNING" else "FINISHED")
