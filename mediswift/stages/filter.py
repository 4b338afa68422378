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
from pydantic import BaseModel, ConfigDict, SerializeAsAny

from mediswift.artifacts import write_atomic
from mediswift.data.contamination import EvalText, NgramIndex, summarise
from mediswift.data.filters import (
    ShardRef,
    ShardScan,
    apply_plan,
    count_ngrams,
    merge_scans,
    revised_after_by_year,
    scan_shard,
)
from mediswift.finetune.datasets import load_task
from mediswift.finetune.registry import task_class
from mediswift.manifests import FilterManifest
from mediswift.settings import FilterConfig, TaskSettings
from mediswift.units import UnitSpec, unkeyed

log = logging.getLogger(__name__)

# Bump when the filter's output changes: it re-keys every filter unit.
# 2: cut-off, PubMed/PMC overlap and decontamination. 3: keys are the unit specs.
# 4: the snapshot cut-off (revised_after) and the any-PMCID overlap rule; scans hold has_pmcid.
# 5: GPT-3's words (punctuation deleted, not a separator), the boilerplate guard, window mode.
# 6: the snapshot reaches PMC (published_after); scans count revised_after by publication year.
FILTER_VERSION = 6
# The splits a task is judged on (model selection and the reported numbers).
EVAL_SPLITS = ("dev", "test")


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


class CountSpec(UnitSpec):
    """Per shard: how many kept documents hold each evaluation n-gram (the guard's count)."""

    stage: ClassVar[str] = "filter"
    kind: ClassVar[str] = "ngram-counts"
    version: ClassVar[int] = FILTER_VERSION

    shard: str
    codes_digest: str
    ngrams_digest: str
    codes: str = unkeyed("", "where the codes are (their digest is keyed)")
    ngrams: str = unkeyed("", "the n-gram index folder (its digest is keyed)")
    index: int = unkeyed(0, "position in the parse manifest (its run name in the UI)")


class FrequentSpec(UnitSpec):
    """The evaluation n-grams held by more than `max_docs` corpus documents: boilerplate."""

    stage: ClassVar[str] = "filter"
    kind: ClassVar[str] = "frequent-ngrams"
    version: ClassVar[int] = FILTER_VERSION

    counts: tuple[str, ...]  # the count units' digests, in shard order
    max_docs: int
    files: tuple[str, ...] = unkeyed((), "the count units' files (their digests are keyed)")


class IndexSpec(UnitSpec):
    stage: ClassVar[str] = "filter"
    kind: ClassVar[str] = "contamination-index"
    version: ClassVar[int] = FILTER_VERSION

    digests: dict[str, dict[str, str]]  # task -> role -> sha256 of the fetched file
    tasks: dict[str, SerializeAsAny[TaskSettings]]  # a setting can re-split dev and test
    ngram: int
    files: dict[str, dict[str, str]] = unkeyed(
        default_factory=dict, description="task -> role -> path under home (digests are keyed)"
    )


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


def merge_unit(
    cfg: FilterConfig, parsed: list[ParsedShard], scans: list[dict[str, Any]]
) -> MergeSpec:
    return MergeSpec(
        shards=tuple(parsed),
        scans=tuple(s["path"] for s in scans),
        max_year=cfg.max_year,
        max_revised=cfg.max_revised,
        pmc_overlap=cfg.pmc_overlap,
        pmc_overlap_rule=cfg.pmc_overlap_rule,
    )


def shard_units(
    cfg: FilterConfig,
    parsed: list[ParsedShard],
    merged: dict[str, Any],
    index: dict[str, Any] | None,
    frequent: dict[str, Any] | None = None,
) -> list[ShardSpec]:
    return [
        ShardSpec(
            shard=s.path,
            codes=codes["path"],
            codes_digest=codes["digest"],
            split_salt=cfg.split_salt,
            validation_fraction=cfg.validation_fraction,
            ngrams=index and index["path"],
            ngrams_digest=index and index["digest"],
            decontaminate_mode=cfg.decontaminate_mode if index else None,
            frequent=frequent and frequent["path"],
            frequent_digest=frequent and frequent["digest"],
            index=i,
        )
        for i, (s, codes) in enumerate(zip(parsed, merged["plans"], strict=True))
    ]


def count_units(
    cfg: FilterConfig,
    parsed: list[ParsedShard],
    merged: dict[str, Any],
    index: dict[str, Any] | None,
) -> list[CountSpec]:
    """The guard's count per shard (none without decontamination or without the guard)."""
    if index is None or cfg.contamination_max_docs is None:
        return []
    return [
        CountSpec(
            shard=s.path,
            codes=codes["path"],
            codes_digest=codes["digest"],
            ngrams=index["path"],
            ngrams_digest=index["digest"],
            index=i,
        )
        for i, (s, codes) in enumerate(zip(parsed, merged["plans"], strict=True))
    ]


def frequent_unit(cfg: FilterConfig, counts: list[dict[str, Any]]) -> FrequentSpec | None:
    if cfg.contamination_max_docs is None or not counts:
        return None
    return FrequentSpec(
        counts=tuple(c["digest"] for c in counts),
        max_docs=cfg.contamination_max_docs,
        files=tuple(c["path"] for c in counts),
    )


def index_unit(
    cfg: FilterConfig,
    tasks: dict[str, TaskSettings],
    files: dict[str, dict[str, str]],
    home: Path,
) -> IndexSpec:
    """The n-gram index of every task's dev and test examples, keyed by the files' digests and
    the tasks' settings, so it is rebuilt exactly when the evaluation texts can differ."""
    from mediswift.artifacts import file_digest

    digests = {
        n: {r: file_digest(home / p) for r, p in sorted(fs.items())} for n, fs in files.items()
    }
    return IndexSpec(
        digests=digests,
        tasks={n: tasks[n] for n in sorted(files)},
        ngram=cfg.contamination_ngram,
        files=files,
    )


# -- running one unit --------------------------------------------------------------------------


def run_scan(spec: ScanSpec, home: Path) -> dict[str, Any]:
    """Scan one parsed shard for the merge (`scan.npz` in the unit)."""
    if (done := spec.done_result(home)) is not None:
        return done
    result = scan_shard(
        spec.shard.ref(home), spec.min_abstract_chars, spec.languages, spec.max_year,
        spec.max_revised,
    )  # fmt: skip
    u = spec.artifact(home).ensure()
    write_atomic(u.path / "scan.npz", result.to_bytes())
    return u.write_manifest(
        {"path": str((u.path / "scan.npz").relative_to(home)), "rows": len(result.codes)}
    )


def run_merge(spec: MergeSpec, home: Path) -> dict[str, Any]:
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
        plans.append(
            {"path": str(path.relative_to(home)), "digest": hashlib.sha256(c.tobytes()).hexdigest()}
        )
    merged: dict[str, Any] = {"plans": plans, "dropped": dropped, "input": sum(map(len, codes))}
    if spec.max_revised is not None:
        merged["revised_after_by_year"] = revised_after_by_year(loaded)
    return u.write_manifest(merged)


def run_shard(spec: ShardSpec, home: Path) -> dict[str, Any]:
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
    return u.write_manifest({"path": str(out.relative_to(home)), **result})


def _save_npz(path: Path, **arrays: np.ndarray) -> str:
    """Write `arrays` as an .npz (no pickles) atomically; the sha256 of its bytes."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def run_counts(spec: CountSpec, home: Path) -> dict[str, Any]:
    """Count the kept documents holding each evaluation n-gram (`counts.npz`: hashes, docs)."""
    if (done := spec.done_result(home)) is not None:
        return done
    index = NgramIndex.load(home / spec.ngrams)
    codes = np.load(home / spec.codes, allow_pickle=False)
    counts = count_ngrams(home / spec.shard, codes, index)
    hashes = np.array(sorted(counts), dtype=np.uint64)
    docs = np.array([counts[int(h)] for h in hashes], dtype=np.int64)
    u = spec.artifact(home).ensure()
    digest = _save_npz(u.path / "counts.npz", hashes=hashes, docs=docs)
    return u.write_manifest(
        {"path": str((u.path / "counts.npz").relative_to(home)), "digest": digest,
         "ngrams": len(hashes)}
    )  # fmt: skip


def run_frequent(spec: FrequentSpec, home: Path) -> dict[str, Any]:
    """Sum the shards' counts; the n-grams in more than `max_docs` documents (`frequent.npy`,
    sorted hashes) are the boilerplate the shard units ignore."""
    if (done := spec.done_result(home)) is not None:
        return done
    total: Counter[int] = Counter()
    for f in spec.files:
        with np.load(home / f, allow_pickle=False) as z:
            total.update(dict(zip(z["hashes"].tolist(), z["docs"].tolist(), strict=True)))
    frequent = np.array(sorted(h for h, n in total.items() if n > spec.max_docs), np.uint64)
    u = spec.artifact(home).ensure()
    buf = io.BytesIO()
    np.save(buf, frequent, allow_pickle=False)
    write_atomic(u.path / "frequent.npy", buf.getvalue())
    return u.write_manifest(
        {
            "path": str((u.path / "frequent.npy").relative_to(home)),
            "digest": hashlib.sha256(buf.getvalue()).hexdigest(),
            "max_docs": spec.max_docs,
            "ignored": len(frequent),  # evaluation n-grams ignored as boilerplate
            "found": len(total),  # evaluation n-grams found in the corpus at all
        }
    )


def evaluation_texts(
    name: str, task: Any, files: dict[str, Path], home: Path | None = None
) -> list[EvalText]:
    """The task's dev and test examples as plain texts (source and target apart); a raw file
    of `home` that does not load is moved aside to be fetched again (`load_task`)."""
    data = load_task(task, files, home)
    return [
        EvalText(name, split, str(ex.id), (ex.source, ex.target))
        for split in EVAL_SPLITS
        for ex in data.splits.get(split, [])
    ]


def run_index(spec: IndexSpec, home: Path) -> dict[str, Any]:
    """Hash the n-grams of every dev and test example of the spec's tasks into
    `<unit>/ngrams.npz` + `examples.jsonl`."""
    if (done := spec.done_result(home)) is not None:
        return done
    examples: list[EvalText] = []
    for name, roles in sorted(spec.files.items()):
        task = task_class(name)(spec.tasks[name])
        examples += evaluation_texts(name, task, {r: home / p for r, p in roles.items()}, home)
    index = NgramIndex.build(examples, spec.ngram)
    u = spec.artifact(home).ensure()
    index.save(u.path)
    return u.write_manifest(
        {
            "path": str(u.path.relative_to(home)),
            "digest": index.digest(),
            "ngram": spec.ngram,
            "ngrams": int(len(index.hashes)),
            **index.coverage(),
        }
    )


# -- the manifest ------------------------------------------------------------------------------


def contamination_record(
    cfg: FilterConfig,
    home: Path,
    index: dict[str, Any],
    results: list[dict[str, Any]],
    frequent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What the manifest says about decontamination: the check, what each rule did (documents
    dropped, cut, spared by the boilerplate guard), and the examples found."""
    examples = NgramIndex.load(home / index["path"]).examples
    matches = [(doc, found) for r in results for doc, found in r.get("matches", [])]
    total: Counter[str] = Counter()
    for r in results:
        total.update({k: r.get(f"contamination{k}", 0) for k in ("", "_cut", "_spared")})
        total.update(chars=r.get("contamination_chars_removed", 0))
    too_short = {
        task: {split: n - index["checked"][task][split] for split, n in splits.items()}
        for task, splits in index["examples"].items()
    }
    return {
        "ngram": index["ngram"],
        "mode": cfg.decontaminate_mode,
        "max_docs": cfg.contamination_max_docs,
        "tasks": sorted(index["examples"]),
        "examples": index["examples"],
        "checked": index["checked"],
        "too_short": too_short,
        "boilerplate_ngrams": frequent["ignored"] if frequent else 0,
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
    merged: dict[str, Any],
    results: list[dict[str, Any]],
    index: dict[str, Any] | None,
    logger: logging.Logger | logging.LoggerAdapter = log,
    frequent: dict[str, Any] | None = None,
) -> FilterManifest:
    """The stage manifest: the kept shards and every document counted once (kept or dropped
    for one reason); counts that do not add up fail the stage."""
    for reason, n in merged["dropped"].items():
        logger.info("filter: dropped %d records: %s", n, reason)
    by_year = merged.get("revised_after_by_year")
    if by_year is not None:
        logger.info("filter: revised_after by publication year: %s", by_year_text(by_year))
    shards: list[dict[str, Any]] = []
    by_source: dict[str, Counter[str]] = {}
    for shard, r in zip(parsed, results, strict=True):
        for src, c in r["by_source"].items():
            by_source.setdefault(src, Counter()).update(c)
        if r["n_docs"]:
            shards.append(
                {k: r[k] for k in ("path", "n_docs", "n_train", "n_validation")}
                | {"input": shard.path, "source": shard.source}
            )
    kept = {
        "train": sum(s["n_train"] for s in shards),
        "validation": sum(s["n_validation"] for s in shards),
    }
    dropped = dict(merged["dropped"])
    contamination = None
    if index is not None:
        c = contamination = contamination_record(cfg, home, index, results, frequent)
        dropped["contamination"] = c["dropped"]
        logger.info(
            "filter: dropped %d records: contamination (%s mode; %d cut, %d kept whole for "
            "sharing only boilerplate n-grams; %d evaluation examples found)",
            c["dropped"], c["mode"], c["cut"], c["spared"], len(c["found"]),
        )  # fmt: skip
    counts = {
        "input": merged["input"],
        "dropped": dropped,
        "kept": kept,
        "by_source": {
            s: {"train": c["train"], "validation": c["validation"]}
            for s, c in sorted(by_source.items())
        },
    }
    if by_year is not None:  # beside `dropped`, whose values must add up
        counts["revised_after_by_year"] = by_year
    if counts["input"] != sum(kept.values()) + sum(dropped.values()):
        raise RuntimeError(f"filter: counts do not add up: {counts}")
    logger.info("filter: kept %d train + %d validation of %d", kept["train"],
                kept["validation"], counts["input"])  # fmt: skip
    rules = {
        "max_year": cfg.max_year,
        "max_revised": cfg.max_revised,
        "pmc_overlap": cfg.pmc_overlap,
        "pmc_overlap_rule": cfg.pmc_overlap_rule if cfg.pmc_overlap else None,
        "decontaminate": cfg.decontaminate,
        "contamination_ngram": cfg.contamination_ngram if cfg.decontaminate else None,
        "decontaminate_mode": cfg.decontaminate_mode if cfg.decontaminate else None,
        "contamination_max_docs": cfg.contamination_max_docs if cfg.decontaminate else None,
    }
    return FilterManifest(shards=shards, counts=counts, rules=rules, contamination=contamination)
