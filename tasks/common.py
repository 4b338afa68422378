"""What every MediSwift task shares: reuse of finished units, with nothing read back by pickle.

Convention: every cached task takes `key: str`, the content key of the unit it produces (see
`mediswift.artifacts`), and writes the unit's `manifest.json` last. A unit with a manifest is
done, so the artifacts themselves are the cache, and Prefect's result persistence and cache
lookups are off for these tasks (`persist_result=False`, `NO_CACHE`).

Why not Prefect's cache: its records are cloudpickles under the result storage, and a record's
metadata names the serializer to load it with. Whoever can write to the home could plant a
record that runs code in the next run that looks it up (even the lookup that only asks whether a
record exists deserializes it). Switching the serializer does not help: a planted record can
still name pickle.

What replaces it: when a task returns and its unit is done, the return value (a model, as the
task's return annotation types it) is written as a plain JSON record, `<home>/prefect-cache/<stage>-<key>-<task>.json`, tied to the exact bytes of
the unit's manifest. Run again for a done unit whose record matches, the task returns the
record's value, validated as the annotated type again, without running its code, in a
Completed state named "Cached" (what the UI shows
for a cache hit). A record that is not ours (another format, a pickle, another unit) is ignored
with a warning, and a stale one (the manifest changed) quietly; then the task runs. Most tasks
return their manifest at once when their unit is done (downloads re-check their files' md5s), so
a lost record costs time, never a wrong result. Records are only ever read with `json.loads`,
which cannot run code.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_type_hints

from prefect import Task, get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.futures import PrefectFuture
from prefect.states import Completed
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from mediswift.artifacts import Artifact, content_key, write_atomic
from mediswift.data.quarantine import describe
from mediswift.units import UnitSpec

RECORD_FORMAT = "mediswift-task-result/1"
RECORDS_DIR = "prefect-cache"
# A record is a small dict of paths and counts; anything larger is not ours.
MAX_RECORD_BYTES = 64 << 20


def _log() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The task run's logger (shown in the UI), or this module's outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def task_digest(task: Task[Any, Any]) -> str:
    """The task's name and source: a record is reused only by the code that wrote it."""
    source = getattr(task, "source_code", None)
    if source is None:
        try:
            source = inspect.getsource(task.fn)
        except (OSError, TypeError):
            source = task.fn.__qualname__
    return content_key(task.name, source)


def record_path(home: Path, artifact: Artifact, digest: str) -> Path:
    return home / RECORDS_DIR / f"{artifact.stage}-{artifact.key}-{digest}.json"


def _manifest_sha(artifact: Artifact) -> str | None:
    try:
        return hashlib.sha256(artifact.manifest_path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _expected(artifact: Artifact, digest: str, manifest: str) -> dict[str, str]:
    """The fields a record of this unit, task and manifest must carry."""
    return {
        "format": RECORD_FORMAT,
        "stage": artifact.stage,
        "key": artifact.key,
        "task": digest,
        "manifest_sha256": manifest,
    }


def read_record(path: Path, artifact: Artifact, digest: str) -> dict[str, Any] | None:
    """The record of a done unit, or None (not done, no record, or a record not ours).

    A record of another format (a pickle, Prefect's own record naming a serializer) or of
    another unit is refused with a warning: nothing in it is used. One written for an earlier
    manifest of this unit (rewritten since) is merely stale: the task runs and records anew.
    """
    manifest = _manifest_sha(artifact)
    if manifest is None or not path.is_file():
        return None
    expected = _expected(artifact, digest, manifest)
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise ValueError(f"larger than {MAX_RECORD_BYTES} bytes")
        record = json.loads(path.read_bytes())
        if not isinstance(record, dict) or "result" not in record:
            raise ValueError("not a result record")
        if any(record.get(k) != v for k, v in expected.items() if k != "manifest_sha256"):
            raise ValueError(f"not a {RECORD_FORMAT} record of this unit and task")
    except (OSError, ValueError, RecursionError) as e:  # JSON errors are ValueErrors
        # RecursionError: JSON nested deeper than the parser recurses, which is no record of ours
        _log().warning("ignoring cache record %s (nothing in it was used): %s", path, describe(e))
        return None
    if record.get("manifest_sha256") != manifest:
        _log().debug("cache record %s is stale (the unit's manifest changed)", path)
        return None
    return record


def write_record(
    path: Path, artifact: Artifact, digest: str, result: Any, kind: TypeAdapter
) -> None:
    """Record `result` (dumped as JSON by its type `kind`) for the next run, if the unit is
    done."""
    manifest = _manifest_sha(artifact)
    if manifest is None:
        return
    try:
        value = kind.dump_python(result, mode="json")
        record = {**_expected(artifact, digest, manifest), "result": value}
        write_atomic(path, json.dumps(record, sort_keys=True, allow_nan=False) + "\n")
    except (TypeError, ValueError, PydanticSerializationError) as e:
        _log().warning("could not record the result of %s: %s", artifact.path, e)
    except OSError as e:
        _log().warning("could not write cache record %s: %s", path, e)


def result_type(fn: Callable[..., Any]) -> TypeAdapter:
    """The task's declared result type: records are written and read back through it."""
    return TypeAdapter(get_type_hints(fn).get("return", Any))


def _reusing(fn: Callable[..., Any], home: Path, artifact: Artifact, digest: str) -> Any:
    """`fn`, answering from the unit's JSON record when the unit is done."""
    path = record_path(home, artifact, digest)
    kind = result_type(fn)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        record = read_record(path, artifact, digest)
        if record is not None:
            try:
                value = kind.validate_python(record["result"])
            except ValidationError as e:
                _log().warning("ignoring cache record %s (not a result of this task): %s", path, e)
            else:
                return Completed(data=value, name="Cached", message=f"{artifact.path}")
        result = fn(*args, **kwargs)
        write_record(path, artifact, digest, result, kind)
        return result

    # Prefect keys the task (names in the UI, the flow tests) on the wrapped function's code.
    run.__prefect_task_source__ = fn  # type: ignore[attr-defined]
    return run


def cached(task: Task, home: Path, artifact: Artifact, **options: Any) -> Task:
    """`task` reusing the result of `artifact` when it is done, with Prefect's own result
    persistence and cache off (see the module docstring).

    Submit the returned task (`.submit(...)`, as every stage does): a cache hit is a Completed
    state named "Cached" whose data is the result, which `future.result()` unwraps.
    """
    clone = copy.copy(task)
    clone.fn = _reusing(task.fn, Path(home), artifact, task_digest(task))
    return clone.with_options(**{**options, "cache_policy": NO_CACHE, "persist_result": False})


def submit_unit(task: Task, home: Path, spec: UnitSpec, **params: Any) -> PrefectFuture[Any]:
    """Submit `task(spec=spec, home=home, **params)` for the unit `spec`, reusing its result
    when the unit is done (`cached`)."""
    return cached(task, home, spec.artifact(home)).submit(spec=spec, home=str(home), **params)


def run_units(task: Task, home: Path, specs: list[UnitSpec]) -> list[Any]:
    """Submit one task per spec, then wait for all; results in spec order (a failure raises,
    naming its unit)."""
    futures = [submit_unit(task, home, s) for s in specs]
    return [f.result() for f in futures]
