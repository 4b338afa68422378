"""Adding a stage is one module and one registry line.

The module below is a whole stage between filter and vocab (its library part, `STAGE` and one
task per document shard, and its flow); the test puts it in the registry with one line and
runs the pipeline through it. Also: the registry is the one source of the stage order that the
command line, the flow's plan and the manifest reference use.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from prefect import task

import flows.registry as registry
from flows.pipeline import mediswift
from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig, load_recipe
from mediswift.manifests import FilterManifest, Manifest
from mediswift.stage_def import StageDef, check_order

TINY = str(Path(__file__).parent / "recipes" / "tiny.yaml")


# -- the new stage: one module's worth ------------------------------------------------------
class LengthsManifest(Manifest):
    chars: dict[str, int]  # filtered shard -> characters of text in its documents


LENGTHS = StageDef("lengths", inputs=("filter",), manifest=LengthsManifest, version=1,
                   has_section=False)  # fmt: skip


@task
def shard_chars(path: str) -> int:
    return sum(len(t) for t in pq.read_table(path, columns=["text"]).column("text").to_pylist())


def run_lengths(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict:
    shards = manifests.read(inputs["filter"], FilterManifest).shards
    futures = {s["path"]: shard_chars.submit(str(home / s["path"])) for s in shards}
    return manifests.write(out, LengthsManifest(chars={p: f.result() for p, f in futures.items()}))


# -- the registry line ---------------------------------------------------------------------
def with_lengths() -> tuple[registry.Stage, ...]:
    at = registry.stage_names().index("filter") + 1
    line = registry.Stage(LENGTHS, run_lengths, on_cluster=True)
    return (*registry.STAGES[:at], line, *registry.STAGES[at:])


def test_registry_orders_every_consumer():
    names = registry.stage_names()
    assert names == [s.define.name for s in registry.STAGES]
    assert registry.parse_stages("evaluate,download") == ["download", "evaluate"]
    assert registry.parse_stages(None) == names
    with pytest.raises(ValueError, match="unknown stage"):
        registry.parse_stages("download,nope")
    reference = registry.manifest_reference()
    positions = [reference.index(f"## {n} (") for n in names]
    assert positions == sorted(positions)


def test_a_stage_reading_a_later_one_is_refused():
    late = StageDef("early", inputs=("vocab",), manifest=LengthsManifest, version=1)
    defs = [s.define for s in registry.STAGES]
    with pytest.raises(ValueError, match="do not come before"):
        check_order([defs[0], late, *defs[1:]])
    with pytest.raises(ValueError, match="listed twice"):
        check_order([*defs, defs[0]])


@pytest.mark.slow
def test_a_stage_added_by_one_registry_line_runs(
    prefect_harness, tmp_path, mirror_dir, monkeypatch
):
    home = tmp_path / "home"
    cfg = load_recipe(TINY, mirror=str(mirror_dir))
    before = registry.plan(cfg, home)
    monkeypatch.setattr(registry, "STAGES", with_lengths())
    assert registry.stage_names()[3:5] == ["lengths", "vocab"]
    after = registry.plan(cfg, home)
    # A stage nobody reads re-keys nothing else.
    assert {s: a.key for s, a in before.items()} == {
        s: a.key for s, a in after.items() if s != "lengths"
    }

    run = mediswift.with_options(validate_parameters=False)
    out = run(recipe=TINY, stages=["download", "parse", "filter", "lengths"],
              home=str(home), mirror=str(mirror_dir))  # fmt: skip
    arts = registry.plan(cfg, home)
    assert out["lengths"] == str(arts["lengths"].path)
    chars = manifests.read(arts["lengths"], LengthsManifest).chars
    shards = manifests.read(arts["filter"], FilterManifest).shards
    assert set(chars) == {s["path"] for s in shards} and min(chars.values()) > 0
    # It ran once: a second run finds it done.
    again = run(recipe=TINY, stages=["lengths"], home=str(home), mirror=str(mirror_dir))
    assert again["lengths"] == out["lengths"]
