"""The filter stage: a planning task over all parsed shards, then one task per shard, then
the manifest last (format: the `filter` entry of the stage manifests).

Counts per drop reason (`superseded`, `deleted`, `empty_text`, `language`, `duplicate`) go
into the manifest and the log; see `mediswift.data.filters` for the rules and their order.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact, unit_artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import FilterManifest, ParseManifest
from tasks import filter as t
from tasks.common import cached


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    f = cfg.filter
    h = str(home)
    parsed = manifests.read(inputs["parse"], ParseManifest).shards
    langs = sorted(f.languages) if f.languages else None

    plan_unit = unit_artifact(
        home, "filter", "plan", [s["path"] for s in parsed], [s.get("deleted_pmids") for s in parsed],
        f.min_abstract_chars, langs, t.FILTER_VERSION,
    )  # fmt: skip
    plan = (
        cached(t.plan, home, plan_unit)
        .submit(
            key=plan_unit.key,
            home=h,
            shards=parsed,
            min_text_chars=f.min_abstract_chars,
            languages=langs,
        )  # fmt: skip
        .result()
    )
    for reason, n in plan["dropped"].items():
        log.info("filter: dropped %d records: %s", n, reason)

    futures = []
    for i, (shard, codes) in enumerate(zip(parsed, plan["plans"], strict=True)):
        u = unit_artifact(
            home, "filter", "shard", shard["path"], codes["digest"], f.split_salt,
            f.validation_fraction, t.FILTER_VERSION,
        )  # fmt: skip
        futures.append(
            cached(t.filter_shard, home, u).submit(
                key=u.key,
                home=h,
                index=i,
                shard=shard["path"],
                codes=codes["path"],
                salt=f.split_salt,
                validation_fraction=f.validation_fraction,
            )  # fmt: skip
        )

    shards: list[dict[str, Any]] = []
    by_source: dict[str, Counter[str]] = {}
    for shard, fut in zip(parsed, futures, strict=True):
        r = fut.result()
        for src, c in r["by_source"].items():
            by_source.setdefault(src, Counter()).update(c)
        if r["n_docs"]:
            shards.append(
                {k: r[k] for k in ("path", "n_docs", "n_train", "n_validation")}
                | {"input": shard["path"], "source": shard["source"]}
            )
    kept = {
        "train": sum(s["n_train"] for s in shards),
        "validation": sum(s["n_validation"] for s in shards),
    }
    counts = {
        "input": plan["input"],
        "dropped": plan["dropped"],
        "kept": kept,
        "by_source": {
            s: {"train": c["train"], "validation": c["validation"]}
            for s, c in sorted(by_source.items())
        },
    }
    if counts["input"] != sum(kept.values()) + sum(plan["dropped"].values()):
        raise RuntimeError(f"filter: counts do not add up: {counts}")
    log.info("filter: kept %d train + %d validation of %d", kept["train"], kept["validation"],
             counts["input"])  # fmt: skip
    return manifests.write(out, FilterManifest(shards=shards, counts=counts))
