"""Prefect tasks of the filter stage: a planning task, then one task per document shard.

`plan` reads the small columns of every parsed shard (in parse-manifest order) and writes one
reason-code array per shard (`mediswift.data.filters.plan_filter`); `filter_shard` applies one
array to its shard and adds the split (`apply_plan`). Both take `key`, the content key of their
unit under `<home>/filter/units/<key>/`, and write the unit manifest last. No network, no
retries.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from mediswift.artifacts import Artifact, unit_at, write_atomic
from mediswift.data.filters import ShardRef, apply_plan, plan_filter

# Bump when the filter's output changes: it re-keys every filter unit.
FILTER_VERSION = 1


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


@task(name="filter-plan")
def plan(
    key: str,
    home: str,
    shards: list[dict[str, Any]],
    min_text_chars: int,
    languages: list[str] | None,
) -> dict[str, Any]:
    if (done := _done(home, key)) is not None:
        return done
    root = Path(home)
    refs = [
        ShardRef(root / s["path"], s["source"], tuple(s.get("deleted_pmids", ()))) for s in shards
    ]
    codes, dropped = plan_filter(refs, min_text_chars, languages)
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
    key: str, home: str, index: int, shard: str, codes: str, salt: str, validation_fraction: float
) -> dict[str, Any]:
    if (done := _done(home, key)) is not None:
        return done
    root = Path(home)
    u = unit(home, key)
    out = u.path / "docs.parquet"
    result = apply_plan(root / shard, load_codes(root / codes), out, salt, validation_fraction)
    result = {"path": str(out.relative_to(root)), **result}
    u.write_manifest(result)
    return result
