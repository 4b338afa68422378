"""Runs: metrics buffered and sent in batches (one `log_batch` per flush, so a training loop
logging every few steps does not pay a round trip per value), params, tags, dataset inputs
and artifacts; a run can be reopened by id to continue."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from mediswift.tracking.store import adopt_home_store, home_id, is_home_store
from mediswift.tracking.uris import ARTIFACTS_DIR, is_server

NOTE_TAG = "mlflow.note.content"  # the run's description, rendered as Markdown by the UI
HOME_TAG = "mediswift.home"  # the id of the home a run was made for (`store.home_id`)
USER_TAG = "mlflow.user"  # who made the run (the UI's "User")


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

    def __init__(
        self, client: MlflowClient, run_id: str, flush_every: int = 200, reopened: bool = False
    ):
        self.client = client
        self.run_id = run_id
        self._buffer: list[Metric] = []
        self._flush_every = flush_every
        # A reopened run (a resumed training) replays the steps after its last checkpoint:
        # metrics at a step the run already holds are not logged twice.
        self._logged: dict[str, int] | None = {} if reopened else None

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
        if self._logged is not None:
            metrics = {k: v for k, v in metrics.items() if step > self._last_logged(k)}
        self._buffer.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if len(self._buffer) >= self._flush_every:
            self.flush()

    def _last_logged(self, key: str) -> int:
        """The last step at which the run held `key` when it was reopened (-1: none)."""
        assert self._logged is not None
        if key not in self._logged:
            history = self.client.get_metric_history(self.run_id, key)
            self._logged[key] = max((m.step for m in history), default=-1)
        return self._logged[key]

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

    A store that is not the home's own (a tracking server) may hold the runs of many homes and
    users: runs are tagged with the home's id and the user, and `find_run` looks among the
    runs of this home only (two homes running the same recipe on the same data compute the
    same unit keys, and must not continue each other's runs).
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None = None):
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        local_root = None if is_server(tracking_uri) else artifact_root
        own = local_root is not None and is_home_store(tracking_uri, local_root)
        if own:
            adopt_home_store(local_root.parent)  # type: ignore[union-attr]
        self.home_id = home_id(artifact_root.parent) if artifact_root is not None else None
        self._scoped = self.home_id is not None and not own
        self.experiment_id = self._experiment(experiment, local_root)

    def _experiment(self, name: str, local_root: Path | None) -> str:
        """The experiment's id, created when missing. On a shared server another home may
        create it at the same moment: the loser of that race takes the winner's."""
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        location = (local_root / name).resolve().as_uri() if local_root else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                raise
            return exp.experiment_id

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, Any] | None = None,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Iterator[RunLogger]:
        """Start (or reopen, given `run_id`) a run; it ends FINISHED, or FAILED on an error.

        A finished run reopened to add to it keeps its end time: its duration stays that of
        the work it records (training), not of the stage that added a model or a table later."""
        all_tags = {"mlflow.runName": name, **self._origin(), **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        created, kept_end = run_id is None, None
        if run_id is None:
            run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
            run_id = run.info.run_id
        else:
            info = self.client.get_run(run_id).info
            kept_end = info.end_time if info.status == "FINISHED" else None
            self.client.update_run(run_id, status="RUNNING")
        logger = RunLogger(self.client, run_id, reopened=not created)
        if params:
            logger.log_params(params)
        try:
            yield logger
        except BaseException as e:
            logger.flush()
            stopped = isinstance(e, KeyboardInterrupt)  # asked to stop: resumable, not failed
            self.client.set_terminated(run_id, status="KILLED" if stopped else "FAILED")
            raise
        logger.flush()
        self.client.set_terminated(run_id, status="FINISHED", end_time=kept_end)

    def _origin(self) -> dict[str, str]:
        """The tags that tell whose run it is: the home's id, the user."""
        import getpass

        tags = {HOME_TAG: self.home_id} if self.home_id else {}
        with contextlib.suppress(Exception):  # no user name (a container without one)
            tags[USER_TAG] = getpass.getuser()
        return tags

    def find_run(self, filter_string: str) -> str | None:
        """The id of this experiment's newest run matching `filter_string`, or None; in a store
        shared with other homes, among this home's runs only."""
        if self._scoped:
            filter_string = f"{filter_string} and tags.`{HOME_TAG}` = '{self.home_id}'"
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


def log_report_run(
    tracking_uri: str, experiment: str, home: Path, folder: Path, tags: dict[str, Any]
) -> str:
    """Log the report folder (HTML, Markdown, figures) as one run; returns its id."""
    tracker = Tracker(tracking_uri, experiment, artifact_root=home / ARTIFACTS_DIR)
    with tracker.run("pipeline-report", tags={"mediswift.kind": "report", **tags}) as run:
        for path in sorted(folder.iterdir()):
            run.log_artifact(path, "report")
    return run.run_id
