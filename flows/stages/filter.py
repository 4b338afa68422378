"""The filter stage's orchestration: scans in parallel, one merge, shards in parallel, then
the manifest (what each unit does and how the counts are made: `mediswift.stages.filter`).

With `filter.decontaminate`, every downstream task's dev and test files are fetched first and
hashed into one n-gram index that each shard unit checks its kept rows against; with the
boilerplate guard, the kept rows of every shard are counted against it first (in parallel) and
the n-grams too frequent in the corpus are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import ParseManifest
from mediswift.stages import filter as S
from mediswift.stages import filter_contamination as C
from tasks import filter as t
from tasks.common import run_units, submit_unit


def contamination_index(cfg: PipelineConfig, home: Path) -> C.IndexResult | None:
    """Fetch every task's evaluation files and hash their n-grams (None: no decontamination)."""
    if not cfg.filter.decontaminate:
        return None
    fetched = {n: t.fetch_eval_files.submit(cfg, n, str(home)) for n in sorted(cfg.finetune.tasks)}
    files = {n: f.result().files for n, f in fetched.items()}
    spec = C.index_unit(cfg.filter, cfg.finetune.tasks, files, home)
    index = submit_unit(t.contamination_index, home, spec).result()
    n = sum(sum(s.values()) for s in index.examples.values())
    get_run_logger().info(
        "filter: decontaminating against %d dev/test examples of %s (%d %d-grams)",
        n, ", ".join(sorted(index.examples)), index.ngrams, index.ngram,
    )  # fmt: skip
    return index


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    parsed = S.parsed_shards(manifests.read(inputs["parse"], ParseManifest).shards)
    index = contamination_index(cfg, home)
    scans = run_units(t.scan, home, S.scan_units(cfg.filter, parsed))
    merge = S.merge_unit(cfg.filter, parsed, scans)
    merged = submit_unit(t.merge, home, merge).result()
    # The boilerplate guard needs every shard's count before any shard is decontaminated.
    counts = run_units(t.count_ngrams, home, S.count_units(cfg.filter, parsed, merged, index))
    frequent = None
    if (spec := C.frequent_unit(cfg.filter, counts)) is not None:
        frequent = submit_unit(t.frequent_ngrams, home, spec).result()
    shards = S.shard_units(cfg.filter, parsed, merged, index, frequent)
    results = run_units(t.filter_shard, home, shards)
    manifest = S.collect(
        cfg.filter, home, parsed, merged, results, index, get_run_logger(), frequent
    )
    return manifests.write(out, manifest)
