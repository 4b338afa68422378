"""Prefect tasks of the filter stage: a planning task, then one task per document shard, and,
when the recipe decontaminates, the evaluation n-gram index they check against.

`scan` reads the small columns of one parsed shard (`mediswift.data.filters.scan_shard`), one
task per shard; `plan` merges the scans (in parse-manifest order) into one reason-code array per
shard (`merge_scans`); `filter_shard` applies one array to its shard, drops contaminated rows
and adds the split (`apply_plan`).
`fetch_eval_files` fetches a downstream task's raw files (the same files, in the same place, as
the finetune stage: whichever runs first fetches them) and `contamination_index` reads their dev
and test examples into plain texts for `mediswift.data.contamination`: reading a task's
examples is the fine-tuning layer's business, so it happens here, above the data layer. Tasks
that take `key` (the content key of their unit under `<home>/filter/units/<key>/`) write the
unit manifest last. Only `fetch_eval_files` uses the network (and retries transient failures).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from mediswift.artifacts import Artifact, unit_at, write_atomic
from mediswift.config import PipelineConfig
from mediswift.data.contamination import EvalText, NgramIndex
from mediswift.data.download import client_for
from mediswift.data.filters import ShardRef, ShardScan, apply_plan, merge_scans, scan_shard
from mediswift.finetune.sources import fetch_task_files
from tasks.download import NETWORK

# Bump when the filter's output changes: it re-keys every filter unit.
# 2: cut-off, PubMed/PMC overlap and decontamination.
FILTER_VERSION = 2
# The splits a task is judged on (model selection and the reported numbers).
EVAL_SPLITS = ("dev", "test")


def unit(home: str, key: str) -> Artifact:
    return unit_at(Path(home), "filter", key)


def _done(home: str, key: str) -> dict[str, Any] | None:
    """The unit's result when it is already on disk (e.g. the Prefect cache was cleared)."""
    u = unit(home, key)
    return (
        {k: v for k, v in u.manifest().items() if k not in ("stage", "key")} if u.done() else None
    )


def load_codes(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def _ref(root: Path, shard: dict[str, Any]) -> ShardRef:
    return ShardRef(root / shard["path"], shard["source"], tuple(shard.get("deleted_pmids", ())))


@task(name="filter-scan", task_run_name="filter-scan-{index}")
def scan(
    key: str,
    home: str,
    index: int,
    shard: dict[str, Any],
    min_text_chars: int,
    languages: list[str] | None,
    max_year: int | None = None,
) -> dict[str, Any]:
    """Scan one parsed shard for the plan (`scan.npz` in the unit)."""
    if (done := _done(home, key)) is not None:
        return done
    root = Path(home)
    result = scan_shard(_ref(root, shard), min_text_chars, languages, max_year)
    u = unit(home, key).ensure()
    write_atomic(u.path / "scan.npz", result.to_bytes())
    out = {"path": str((u.path / "scan.npz").relative_to(root)), "rows": len(result.codes)}
    u.write_manifest(out)
    return out


@task(name="filter-plan")
def plan(
    key: str,
    home: str,
    shards: list[dict[str, Any]],
    scans: list[str],
    max_year: int | None = None,
    pmc_overlap: bool = False,
) -> dict[str, Any]:
    """Merge the shards' scans (`scans`: their paths, in shard order) into the plan."""
    if (done := _done(home, key)) is not None:
        return done
    root = Path(home)
    refs = [_ref(root, s) for s in shards]
    loaded = [ShardScan.load(root / p) for p in scans]
    codes, dropped = merge_scans(refs, loaded, max_year, pmc_overlap)
    u = unit(home, key).ensure()
    plans = []
    for i, c in enumerate(codes):
        buf = io.BytesIO()
        np.save(buf, c, allow_pickle=False)
        path = u.path / f"codes-{i:05d}.npy"
        write_atomic(path, buf.getvalue())
        plans.append(
            {"path": str(path.relative_to(root)), "digest": hashlib.sha256(c.tobytes()).hexdigest()}
        )
    result = {"plans": plans, "dropped": dropped, "input": sum(len(c) for c in codes)}
    u.write_manifest(result)
    return result


@task(name="filter-shard", task_run_name="filter-shard-{index}")
def filter_shard(
    key: str,
    home: str,
    index: int,
    shard: str,
    codes: str,
    salt: str,
    validation_fraction: float,
    ngrams: str | None = None,
) -> dict[str, Any]:
    """Filter one shard; `ngrams`: the evaluation n-gram index folder (None: no check)."""
    if (done := _done(home, key)) is not None:
        return done
    root = Path(home)
    u = unit(home, key)
    out = u.path / "docs.parquet"
    found = NgramIndex.load(root / ngrams) if ngrams else None
    result = apply_plan(
        root / shard, load_codes(root / codes), out, salt, validation_fraction, found
    )
    result = {"path": str(out.relative_to(root)), **result}
    u.write_manifest(result)
    return result


@task(name="filter-fetch-eval", task_run_name="fetch-eval-{task_name}", **NETWORK)
def fetch_eval_files(cfg: PipelineConfig, task_name: str, home: str) -> dict[str, str]:
    """The task's raw files under <home>/raw (mirrored when the recipe has a mirror)."""
    return fetch_task_files(
        client_for(cfg.download),
        cfg.finetune.task(task_name),
        Path(home),
        cfg.resolve,
        eval_only=True,
    )


def evaluation_texts(name: str, task: Any, files: dict[str, Path]) -> list[EvalText]:
    """The task's dev and test examples as plain texts (source and target apart)."""
    data = task.load(files)
    return [
        EvalText(name, split, str(ex.id), (ex.source, ex.target))
        for split in EVAL_SPLITS
        for ex in data.splits.get(split, [])
    ]


@task(name="filter-contamination-index")
def contamination_index(
    key: str, home: str, cfg: PipelineConfig, files: dict[str, dict[str, str]], ngram: int
) -> dict[str, Any]:
    """Hash the n-grams of every dev and test example of the tasks in `files` (task -> role ->
    path under home) into `<unit>/ngrams.npz` + `examples.jsonl`."""
    if (done := _done(home, key)) is not None:
        return done
    root = Path(home)
    examples: list[EvalText] = []
    for name, roles in sorted(files.items()):
        paths = {role: root / rel for role, rel in roles.items()}
        examples += evaluation_texts(name, cfg.finetune.task(name), paths)
    index = NgramIndex.build(examples, ngram)
    u = unit(home, key).ensure()
    index.save(u.path)
    result = {
        "path": str(u.path.relative_to(root)),
        "digest": index.digest(),
        "ngram": ngram,
        "ngrams": int(len(index.hashes)),
        **index.coverage(),
    }
    u.write_manifest(result)
    return result
