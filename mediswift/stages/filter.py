"""The filter stage: scan every parsed shard, merge the scans into one drop code per row, apply
the codes shard by shard, and count (manifest: `FilterManifest`).

Units: one `ScanSpec` per parsed shard (reads its small columns), one `MergeSpec` over all scans
(the rules across shards: revisions, deletions, duplicates, PMC overlap), one `ShardSpec` per
shard (drops the rows, checks the kept ones against the evaluation n-grams, adds the split) and,
with `filter.decontaminate`, one `IndexSpec` hashing the downstream tasks' dev and test n-grams.
With the boilerplate guard (`filter.contamination_max_docs`), one `CountSpec` per shard counts
the kept documents holding each evaluation n-gram and one `FrequentSpec` sums them into the
n-grams to ignore, before the shard units run: the guard needs the whole corpus's counts, so
the kept text is hashed twice (once to count, once to decontaminate).
See `mediswift.data.filters` for the rules and their order.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from mediswift.artifacts import write_atomic
from mediswift.data.contamination import NgramIndex, summarise
from mediswift.data.filters import (
    ShardRef,
    ShardScan,
    apply_plan,
    merge_scans,
    revised_after_by_year,
    scan_shard,
)
from mediswift.manifests import FilterManifest
from mediswift.sections import FilterConfig
from mediswift.stage_def import StageDef
from mediswift.stages.filter_contamination import (
    CountSpec,
    FrequentResult,
    IndexResult,
)
from mediswift.stages.filter_version import FILTER_VERSION
from mediswift.units import FileRef, UnitResult, UnitSpec, unkeyed

# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs.
STAGE = StageDef("filter", inputs=("parse",), manifest=FilterManifest, version=3)

log = logging.getLogger(__name__)


class ParsedShard(BaseModel):
    """A parsed shard as the parse manifest lists it (order matters: latest wins)."""

    model_config = ConfigDict(frozen=True)

    path: str
    source: str
    deleted_pmids: tuple[str, ...] = ()

    def ref(self, home: Path) -> ShardRef:
        return ShardRef(home / self.path, self.source, self.deleted_pmids)


def parsed_shards(shards: list[dict[str, Any]]) -> list[ParsedShard]:
    return [
        ParsedShard(
            path=s["path"], source=s["source"], deleted_pmids=tuple(s.get("deleted_pmids") or ())
        )
        for s in shards
    ]


class ScanSpec(UnitSpec):
    stage: ClassVar[str] = "filter"
    kind: ClassVar[str] = "scan"
    version: ClassVar[int] = FILTER_VERSION

    shard: ParsedShard
    min_abstract_chars: int
    languages: tuple[str, ...] | None
    max_year: int | None
    max_revised: str | None
    index: int = unkeyed(0, "position in the parse manifest (its run name in the UI)")


class MergeSpec(UnitSpec):
    stage: ClassVar[str] = "filter"
    kind: ClassVar[str] = "merge"
    version: ClassVar[int] = FILTER_VERSION

    shards: tuple[ParsedShard, ...]
    scans: tuple[str, ...]  # the scan units' files, in shard order (their keys name them)
    max_year: int | None
    max_revised: str | None
    pmc_overlap: bool
    pmc_overlap_rule: str


class ShardSpec(UnitSpec):
    stage: ClassVar[str] = "filter"
    kind: ClassVar[str] = "shard"
    version: ClassVar[int] = FILTER_VERSION

    shard: str
    codes_digest: str
    split_salt: str
    validation_fraction: float
    ngrams_digest: str | None
    decontaminate_mode: str | None = None  # None: no decontamination
    frequent_digest: str | None = None  # the boilerplate n-grams ignored (None: no guard)
    codes: str = unkeyed("", "where the codes are (their digest is keyed)")
    ngrams: str | None = unkeyed(None, "the n-gram index folder (its digest is keyed)")
    frequent: str | None = unkeyed(None, "the boilerplate n-grams' file (its digest is keyed)")
    index: int = unkeyed(0, "position in the parse manifest (its run name in the UI)")


# -- what the units return (their manifests) ---------------------------------------------------


class ScanResult(UnitResult):
    path: str  # scan.npz
    rows: int


class MergeResult(UnitResult):
    plans: list[FileRef]  # the reason codes of each shard, in shard order
    dropped: dict[str, int]  # records dropped per reason
    input: int  # records in
    revised_after_by_year: dict[str, int] | None = None  # with max_revised


class ShardResult(UnitResult):
    path: str  # docs.parquet
    n_docs: int
    n_train: int
    n_validation: int
    by_source: dict[str, dict[str, int]]  # source -> split -> documents
    # With decontamination: documents dropped, cut, kept whole (only boilerplate shared),
    # characters removed, and which documents held which examples' n-grams.
    contamination: int | None = None
    contamination_cut: int | None = None
    contamination_spared: int | None = None
    contamination_chars_removed: int | None = None
    matches: list[tuple[str, list[int]]] | None = None


ScanSpec.Result = ScanResult
MergeSpec.Result = MergeResult
ShardSpec.Result = ShardResult


# -- units ------------------------------------------------------------------------------------


def scan_units(cfg: FilterConfig, parsed: list[ParsedShard]) -> list[ScanSpec]:
    langs = tuple(sorted(cfg.languages)) if cfg.languages else None
    return [
        ScanSpec(
            shard=s,
            min_abstract_chars=cfg.min_abstract_chars,
            languages=langs,
            max_year=cfg.max_year,
            max_revised=cfg.max_revised,
            index=i,
        )
        for i, s in enumerate(parsed)
    ]


def merge_unit(cfg: FilterConfig, parsed: list[ParsedShard], scans: list[ScanResult]) -> MergeSpec:
    return MergeSpec(
        shards=tuple(parsed),
        scans=tuple(s.path for s in scans),
        max_year=cfg.max_year,
        max_revised=cfg.max_revised,
        pmc_overlap=cfg.pmc_overlap,
        pmc_overlap_rule=cfg.pmc_overlap_rule,
    )


def shard_units(
    cfg: FilterConfig,
    parsed: list[ParsedShard],
    merged: MergeResult,
    index: IndexResult | None,
    frequent: FrequentResult | None = None,
) -> list[ShardSpec]:
    return [
        ShardSpec(
            shard=s.path,
            codes=codes.path,
            codes_digest=codes.digest,
            split_salt=cfg.split_salt,
            validation_fraction=cfg.validation_fraction,
            ngrams=index and index.path,
            ngrams_digest=index and index.digest,
            decontaminate_mode=cfg.decontaminate_mode if index else None,
            frequent=frequent and frequent.path,
            frequent_digest=frequent and frequent.digest,
            index=i,
        )
        for i, (s, codes) in enumerate(zip(parsed, merged.plans, strict=True))
    ]


def count_units(
    cfg: FilterConfig,
    parsed: list[ParsedShard],
    merged: MergeResult,
    index: IndexResult | None,
) -> list[CountSpec]:
    """The guard's count per shard (none without decontamination or without the guard)."""
    if index is None or cfg.contamination_max_docs is None:
        return []
    return [
        CountSpec(
            shard=s.path,
            codes=codes.path,
            codes_digest=codes.digest,
            ngrams=index.path,
            ngrams_digest=index.digest,
            index=i,
        )
        for i, (s, codes) in enumerate(zip(parsed, merged.plans, strict=True))
    ]


# -- running one unit --------------------------------------------------------------------------


def run_scan(spec: ScanSpec, home: Path) -> ScanResult:
    """Scan one parsed shard for the merge (`scan.npz` in the unit)."""
    if (done := spec.done_result(home)) is not None:
        return done
    result = scan_shard(
        spec.shard.ref(home), spec.min_abstract_chars, spec.languages, spec.max_year,
        spec.max_revised,
    )  # fmt: skip
    path = spec.artifact(home).ensure().path / "scan.npz"
    write_atomic(path, result.to_bytes())
    return spec.finish(home, ScanResult(path=str(path.relative_to(home)), rows=len(result.codes)))


def run_merge(spec: MergeSpec, home: Path) -> MergeResult:
    """Merge the shards' scans into one reason-code array per shard (`codes-<i>.npy`)."""
    if (done := spec.done_result(home)) is not None:
        return done
    refs = [s.ref(home) for s in spec.shards]
    loaded = [ShardScan.load(home / p) for p in spec.scans]
    codes, dropped = merge_scans(
        refs, loaded, spec.max_year, spec.pmc_overlap, spec.max_revised, spec.pmc_overlap_rule
    )
    u = spec.artifact(home).ensure()
    plans = []
    for i, c in enumerate(codes):
        buf = io.BytesIO()
        np.save(buf, c, allow_pickle=False)
        path = u.path / f"codes-{i:05d}.npy"
        write_atomic(path, buf.getvalue())
        digest = hashlib.sha256(c.tobytes()).hexdigest()
        plans.append(FileRef(path=str(path.relative_to(home)), digest=digest))
    by_year = revised_after_by_year(loaded) if spec.max_revised is not None else None
    return spec.finish(
        home,
        MergeResult(plans=plans, dropped=dropped, input=sum(map(len, codes)),
                    revised_after_by_year=by_year),
    )  # fmt: skip


def run_shard(spec: ShardSpec, home: Path) -> ShardResult:
    """Filter one shard by its codes, drop contaminated rows, add the split."""
    if (done := spec.done_result(home)) is not None:
        return done
    u = spec.artifact(home)
    out = u.path / "docs.parquet"
    found = NgramIndex.load(home / spec.ngrams) if spec.ngrams else None
    codes = np.load(home / spec.codes, allow_pickle=False)
    ignore = None
    if spec.frequent:
        ignore = set(np.load(home / spec.frequent, allow_pickle=False).tolist())
    result = apply_plan(
        home / spec.shard, codes, out, spec.split_salt, spec.validation_fraction, found,
        spec.decontaminate_mode or "document", ignore,
    )  # fmt: skip
    return spec.finish(home, ShardResult(path=str(out.relative_to(home)), **result))


# -- the manifest ------------------------------------------------------------------------------


def contamination_record(
    cfg: FilterConfig,
    home: Path,
    index: IndexResult,
    results: list[ShardResult],
    frequent: FrequentResult | None = None,
) -> dict[str, Any]:
    """What the manifest says about decontamination: the check, what each rule did (documents
    dropped, cut, spared by the boilerplate guard), and the examples found."""
    examples = NgramIndex.load(home / index.path).examples
    matches = [(doc, found) for r in results for doc, found in r.matches or []]
    total: Counter[str] = Counter()
    for r in results:
        total.update({"": r.contamination or 0, "_cut": r.contamination_cut or 0,
                      "_spared": r.contamination_spared or 0,
                      "chars": r.contamination_chars_removed or 0})  # fmt: skip
    too_short = {
        task: {split: n - index.checked[task][split] for split, n in splits.items()}
        for task, splits in index.examples.items()
    }
    return {
        "ngram": index.ngram,
        "mode": cfg.decontaminate_mode,
        "max_docs": cfg.contamination_max_docs,
        "tasks": sorted(index.examples),
        "examples": index.examples,
        "checked": index.checked,
        "too_short": too_short,
        "boilerplate_ngrams": frequent.ignored if frequent else 0,
        "documents": len(matches),
        "dropped": total[""],
        "cut": total["_cut"],
        "spared": total["_spared"],
        "chars_removed": total["chars"],
        "found": summarise(examples, matches),
    }


def by_year_text(by_year: dict[str, int]) -> str:
    """`1998: 2, 2021: 40` (oldest first), or `none`."""
    return ", ".join(f"{y}: {n}" for y, n in by_year.items()) or "none"


def collect(
    cfg: FilterConfig,
    home: Path,
    parsed: list[ParsedShard],
    merged: MergeResult,
    results: list[ShardResult],
    index: IndexResult | None,
    logger: logging.Logger | logging.LoggerAdapter = log,
    frequent: FrequentResult | None = None,
) -> FilterManifest:
    """The stage manifest: the kept shards and every document counted once (kept or dropped
    for one reason); counts that do not add up fail the stage."""
    for reason, n in merged.dropped.items():
        logger.info("filter: dropped %d records: %s", n, reason)
    by_year = merged.revised_after_by_year
    if by_year is not None:
        logger.info("filter: revised_after by publication year: %s", by_year_text(by_year))
    shards, by_source = kept_shards(parsed, results)
    kept = {
        "train": sum(s["n_train"] for s in shards),
        "validation": sum(s["n_validation"] for s in shards),
    }
    dropped = dict(merged.dropped)
    contamination = None
    if index is not None:
        c = contamination = contamination_record(cfg, home, index, results, frequent)
        dropped["contamination"] = c["dropped"]
        logger.info(
            "filter: dropped %d records: contamination (%s mode; %d cut, %d kept whole for "
            "sharing only boilerplate n-grams; %d evaluation examples found)",
            c["dropped"], c["mode"], c["cut"], c["spared"], len(c["found"]),
        )  # fmt: skip
    counts = {"input": merged.input, "dropped": dropped, "kept": kept, "by_source": by_source}
    if by_year is not None:  # beside `dropped`, whose values must add up
        counts["revised_after_by_year"] = by_year
    if counts["input"] != sum(kept.values()) + sum(dropped.values()):
        raise RuntimeError(f"filter: counts do not add up: {counts}")
    logger.info("filter: kept %d train + %d validation of %d", kept["train"],
                kept["validation"], counts["input"])  # fmt: skip
    return FilterManifest(
        shards=shards, counts=counts, rules=rules_applied(cfg), contamination=contamination
    )


def kept_shards(
    parsed: list[ParsedShard], results: list[ShardResult]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """The filtered shards that kept documents (with the shard each was made from), and the
    documents kept per source and split."""
    shards: list[dict[str, Any]] = []
    by_source: dict[str, Counter[str]] = {}
    for shard, r in zip(parsed, results, strict=True):
        for src, c in r.by_source.items():
            by_source.setdefault(src, Counter()).update(c)
        if r.n_docs:
            shards.append(
                r.model_dump(include={"path", "n_docs", "n_train", "n_validation"})
                | {"input": shard.path, "source": shard.source}
            )
    per_source = {
        s: {"train": c["train"], "validation": c["validation"]}
        for s, c in sorted(by_source.items())
    }
    return shards, per_source


def rules_applied(cfg: FilterConfig) -> dict[str, Any]:
    """The optional rules of the recipe, as the manifest (and the report) states them."""
    return {
        "max_year": cfg.max_year,
        "max_revised": cfg.max_revised,
        "pmc_overlap": cfg.pmc_overlap,
        "pmc_overlap_rule": cfg.pmc_overlap_rule if cfg.pmc_overlap else None,
        "decontaminate": cfg.decontaminate,
        "contamination_ngram": cfg.contamination_ngram if cfg.decontaminate else None,
        "decontaminate_mode": cfg.decontaminate_mode if cfg.decontaminate else None,
        "contamination_max_docs": cfg.contamination_max_docs if cfg.decontaminate else None,
    }
