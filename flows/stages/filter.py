"""The filter stage: one scan task per parsed shard, a small planning task that merges the
scans, then one task per shard, then the manifest last (format: the `filter` entry of the stage
manifests).

Counts per drop reason (`superseded`, `deleted`, `empty_text`, `language`, `duplicate`, and
when their rule is on `after_cutoff`, `pmc_overlap`, `contamination`) go into the manifest and
the log; see `mediswift.data.filters` for the rules and their order. With
`filter.decontaminate`, the dev and test examples of the recipe's downstream tasks are fetched
and hashed first (`contamination_index`), and every shard task checks its kept rows against
them; the manifest lists the examples found.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prefect import get_run_logger

from mediswift import manifests
from mediswift.artifacts import Artifact, file_digest, unit_artifact
from mediswift.config import PipelineConfig
from mediswift.data.contamination import NgramIndex, summarise
from mediswift.manifests import FilterManifest, ParseManifest
from tasks import filter as t
from tasks.common import cached


def contamination_index(cfg: PipelineConfig, home: Path) -> dict[str, Any] | None:
    """Fetch every task's files and hash its dev and test n-grams (None: no decontamination).

    The unit is keyed by the files' digests and the tasks' settings (a setting can re-split
    dev), so it is rebuilt exactly when the evaluation texts can differ."""
    if not cfg.filter.decontaminate:
        return None
    names = sorted(cfg.finetune.tasks)
    fetched = {n: t.fetch_eval_files.submit(cfg, n, str(home)) for n in names}
    files = {n: f.result() for n, f in fetched.items()}
    digests = {
        n: {r: file_digest(home / p) for r, p in sorted(fs.items())} for n, fs in files.items()
    }
    settings = {n: cfg.finetune.tasks[n].result_settings() for n in names}
    ngram = cfg.filter.contamination_ngram
    u = unit_artifact(
        home, "filter", "contamination-index", digests, settings, ngram, t.FILTER_VERSION
    )
    return (
        cached(t.contamination_index, home, u)
        .submit(key=u.key, home=str(home), cfg=cfg, files=files, ngram=ngram)
        .result()
    )


def contamination_record(
    home: Path, index: dict[str, Any], results: list[dict[str, Any]]
) -> dict[str, Any]:
    """What the manifest says about decontamination: the check, and the examples found."""
    examples = NgramIndex.load(home / index["path"]).examples
    matches = [(doc, found) for r in results for doc, found in r.get("matches", [])]
    return {
        "ngram": index["ngram"],
        "tasks": sorted(index["examples"]),
        "examples": index["examples"],
        "checked": index["checked"],
        "documents": len(matches),
        "found": summarise(examples, matches),
    }


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    f = cfg.filter
    h = str(home)
    parsed = manifests.read(inputs["parse"], ParseManifest).shards
    langs = sorted(f.languages) if f.languages else None
    index = contamination_index(cfg, home)
    if index is not None:
        n = sum(sum(s.values()) for s in index["examples"].values())
        log.info("filter: decontaminating against %d dev/test examples of %s (%d %d-grams)",
                 n, ", ".join(sorted(index["examples"])), index["ngrams"], index["ngram"])  # fmt: skip

    # The plan: one scan per shard (in parallel, or on the cluster), then a small merge.
    scans = []
    for i, shard in enumerate(parsed):
        u = unit_artifact(
            home, "filter", "scan", shard["path"], f.min_abstract_chars, langs, f.max_year,
            t.FILTER_VERSION,
        )  # fmt: skip
        scans.append(
            cached(t.scan, home, u).submit(
                key=u.key,
                home=h,
                index=i,
                shard=shard,
                min_text_chars=f.min_abstract_chars,
                languages=langs,
                max_year=f.max_year,
            )  # fmt: skip
        )
    scan_paths = [s.result()["path"] for s in scans]
    plan_unit = unit_artifact(
        home, "filter", "plan", [s["path"] for s in parsed], [s.get("deleted_pmids") for s in parsed],
        f.min_abstract_chars, langs, f.max_year, f.pmc_overlap, t.FILTER_VERSION,
    )  # fmt: skip
    plan = (
        cached(t.plan, home, plan_unit)
        .submit(
            key=plan_unit.key,
            home=h,
            shards=parsed,
            scans=scan_paths,
            max_year=f.max_year,
            pmc_overlap=f.pmc_overlap,
        )
        .result()
    )
    for reason, n in plan["dropped"].items():
        log.info("filter: dropped %d records: %s", n, reason)

    futures = []
    for i, (shard, codes) in enumerate(zip(parsed, plan["plans"], strict=True)):
        u = unit_artifact(
            home, "filter", "shard", shard["path"], codes["digest"], f.split_salt,
            f.validation_fraction, index and index["digest"], t.FILTER_VERSION,
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
                ngrams=index and index["path"],
            )  # fmt: skip
        )

    shards: list[dict[str, Any]] = []
    by_source: dict[str, Counter[str]] = {}
    results = [fut.result() for fut in futures]
    for shard, r in zip(parsed, results, strict=True):
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
    dropped = dict(plan["dropped"])
    contamination = None
    if index is not None:
        contamination = contamination_record(home, index, results)
        dropped["contamination"] = contamination["documents"]
        log.info("filter: dropped %d records: contamination (%d evaluation examples found)",
                 dropped["contamination"], len(contamination["found"]))  # fmt: skip
    counts = {
        "input": plan["input"],
        "dropped": dropped,
        "kept": kept,
        "by_source": {
            s: {"train": c["train"], "validation": c["validation"]}
            for s, c in sorted(by_source.items())
        },
    }
    if counts["input"] != sum(kept.values()) + sum(dropped.values()):
        raise RuntimeError(f"filter: counts do not add up: {counts}")
    log.info("filter: kept %d train + %d validation of %d", kept["train"], kept["validation"],
             counts["input"])  # fmt: skip
    rules = {
        "max_year": f.max_year,
        "pmc_overlap": f.pmc_overlap,
        "decontaminate": f.decontaminate,
        "contamination_ngram": f.contamination_ngram if f.decontaminate else None,
    }
    manifest = FilterManifest(
        shards=shards, counts=counts, rules=rules, contamination=contamination
    )
    return manifests.write(out, manifest)
