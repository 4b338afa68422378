"""No task result is ever read back with pickle, whatever is planted under the home.

Cached task results used to be cloudpickles under `<home>/prefect-results`, found through
records under `<home>/prefect-cache` that name their serializer: anyone who could write to the
home could plant a pickle there and run code as the pipeline. This test plants, in every file
the pipeline and Prefect keep there (and at every unit's key), a pickle that touches a marker
file when loaded and a record that claims the pickle serializer, then re-runs the download,
parse and filter stages of the tiny recipe through the flow.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import time
from collections import Counter
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
from prefect.results import ResultRecord, ResultRecordMetadata
from prefect.serializers import PickleSerializer
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from pydantic import BaseModel, TypeAdapter

from flows.pipeline import mediswift
from flows.registry import plan
from mediswift.artifacts import unit_at
from mediswift.config import load_recipe
from tasks.common import read_record, record_path, write_record


class Shards(BaseModel):
    shards: list[dict[str, str | int]]


TINY = str(Path(__file__).parent / "recipes" / "tiny.yaml")
STAGES = ["download", "parse", "filter"]


class Touch:
    """Unpickling this touches `marker`: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _plant(home: Path, marker: Path) -> int:
    """Overwrite every file under the result and record folders (and add one per unit key)
    with a pickle-claiming record whose result is a `Touch` pickle; how many were planted."""
    results, records = home / "prefect-results", home / "prefect-cache"
    results.mkdir(exist_ok=True)
    records.mkdir(exist_ok=True)
    names = {p.name for d in (results, records) for p in d.iterdir() if p.is_file()}
    names |= {p.name for p in home.glob("*/units/*")}
    pickle = PickleSerializer()
    payload = pickle.dumps(Touch(marker))
    for name in names:
        stored = results / name
        # Split form, as written with a cache policy's key storage: metadata here, result there.
        meta = ResultRecordMetadata(storage_key=str(stored), serializer=pickle)
        (records / name).write_bytes(meta.dump_bytes())
        stored.write_bytes(payload)
        # Single-file form, as Prefect writes results without key storage.
        whole = ResultRecord(metadata=meta, result=Touch(marker))
        (results / f"{name}.record").write_bytes(whole.serialize())
    return len(names)


def _forget_stages(home: Path, mirror: Path) -> None:
    """Delete the stage manifests (not the units'): the stages run again, unit by unit."""
    arts = plan(load_recipe(TINY, mirror=str(mirror)), home)
    for stage in STAGES:
        arts[stage].manifest_path.unlink()


def _run(home: Path, mirror: Path, marker: Path) -> tuple[dict[str, Any], Counter[str]]:
    state = mediswift(
        recipe=TINY, stages=STAGES, home=str(home), mirror=str(mirror), return_state=True
    )
    assert not marker.exists(), "a planted pickle was loaded"
    assert state.is_completed(), state
    out = state.result()
    manifests = {s: json.loads((Path(out[s]) / "manifest.json").read_text()) for s in STAGES}
    # Task states reach the API as events, a little after the flow returns (process-pool
    # tasks last): wait, boundedly, until none is still shown unfinished.
    for _ in range(120):
        states = asyncio.run(_states(state.state_details.flow_run_id))
        if not {"Pending", "Running", "Scheduled"} & set(states):
            break
        time.sleep(0.5)
    return manifests, states


async def _states(flow_run_id: UUID) -> Counter[str]:
    """State names of the unit tasks (those taking a unit spec or a content key) of a flow
    run."""
    async with get_client() as client:
        children = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
            )
        )
        out: Counter[str] = Counter()
        for rid in [flow_run_id, *(c.id for c in children)]:
            for tr in await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [rid]})
            ):
                if "spec" in tr.task_inputs or "key" in tr.task_inputs:
                    out[tr.state.name if tr.state else "?"] += 1
        return out


@pytest.mark.slow
def test_planted_pickles_are_never_loaded(prefect_harness, mirror_dir: Path, tmp_path: Path):
    home = tmp_path / "home"
    marker = tmp_path / "pickle-was-loaded"
    # What `mediswift run` sets: Prefect's local result storage under the home.
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: home / "prefect-results"}):
        first, _ = _run(home, mirror_dir, marker)
        results = home / "prefect-results"
        assert not results.exists() or not any(results.iterdir())  # Prefect persisted nothing

        assert _plant(home, marker) > 10
        _forget_stages(home, mirror_dir)
        second, states = _run(home, mirror_dir, marker)
        assert second == first
        assert states and "Cached" not in states, states  # every planted record was refused

        # The records the re-run wrote are plain JSON: a third run reuses them, still no pickle.
        _forget_stages(home, mirror_dir)
        third, states = _run(home, mirror_dir, marker)
        assert third == first
        assert set(states) == {"Cached"}, states


def test_records_are_json_of_a_done_unit_only(tmp_path: Path) -> None:
    """The record helpers alone: what they write is plain JSON, what they refuse is not used."""
    home, marker = tmp_path / "home", tmp_path / "pickle-was-loaded"
    unit = unit_at(home, "parse", "k1").ensure()
    path = record_path(home, unit, "t1")
    result = Shards(shards=[{"path": "parse/units/k1/docs-00000.parquet", "n_docs": 3}])
    kind = TypeAdapter(Shards)

    write_record(path, unit, "t1", result, kind)
    assert not path.exists()  # the unit is not done: nothing to record
    unit.write_manifest({"n": 1})
    write_record(path, unit, "t1", result, kind)
    assert kind.validate_python(read_record(path, unit, "t1")["result"]) == result
    assert read_record(path, unit, "another task") is None

    unit.write_manifest({"n": 2})  # the unit was redone: the record is stale
    assert read_record(path, unit, "t1") is None

    # A value its type cannot dump as JSON is not recorded (the task simply runs).
    path.unlink()
    write_record(path, unit, "t1", {"nan": float("nan")}, TypeAdapter(dict[str, float]))
    assert not path.exists()

    # Prefect's own record form, naming the pickle serializer, with the pickle inline.
    meta = ResultRecordMetadata(storage_key=str(path), serializer=PickleSerializer())
    path.write_bytes(ResultRecord(metadata=meta, result=Touch(marker)).serialize())
    assert read_record(path, unit, "t1") is None
    path.write_bytes(PickleSerializer().dumps(Touch(marker)))
    assert read_record(path, unit, "t1") is None
    assert not marker.exists()
