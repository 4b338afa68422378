"""The filter stage's decontamination units: the n-gram index of the downstream tasks' dev and
test examples (`IndexSpec`) and, for the boilerplate guard, the per-shard counts of kept
documents holding each of those n-grams (`CountSpec`) and their sum into the n-grams to ignore
(`FrequentSpec`). The shard units of `mediswift.stages.filter` read what these make.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import SerializeAsAny

from mediswift.artifacts import write_atomic
from mediswift.data.contamination import EvalText, NgramIndex
from mediswift.data.filters import count_ngrams
from mediswift.finetune.datasets import load_task
from mediswift.finetune.registry import task_class
from mediswift.sections import FilterConfig, TaskSettings
from mediswift.stages.filter_version import EVAL_SPLITS, FILTER_VERSION
from mediswift.units import UnitResult, UnitSpec, unkeyed


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


class CountResult(UnitResult):
    path: str  # counts.npz
    digest: str
    ngrams: int


class FrequentResult(UnitResult):
    path: str  # frequent.npy
    digest: str
    max_docs: int
    ignored: int  # evaluation n-grams ignored as boilerplate
    found: int  # evaluation n-grams found in the corpus at all


class IndexResult(UnitResult):
    path: str  # the index folder
    digest: str
    ngram: int
    ngrams: int
    examples: dict[str, dict[str, int]]  # task -> split -> examples
    checked: dict[str, dict[str, int]]  # ... of them long enough to be checked


def frequent_unit(cfg: FilterConfig, counts: list[CountResult]) -> FrequentSpec | None:
    if cfg.contamination_max_docs is None or not counts:
        return None
    return FrequentSpec(
        counts=tuple(c.digest for c in counts),
        max_docs=cfg.contamination_max_docs,
        files=tuple(c.path for c in counts),
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


def _save_npz(path: Path, **arrays: np.ndarray) -> str:
    """Write `arrays` as an .npz (no pickles) atomically; the sha256 of its bytes."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_atomic(path, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def run_counts(spec: CountSpec, home: Path) -> CountResult:
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
    path = str((u.path / "counts.npz").relative_to(home))
    return spec.finish(home, CountResult(path=path, digest=digest, ngrams=len(hashes)))


def run_frequent(spec: FrequentSpec, home: Path) -> FrequentResult:
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
    return spec.finish(
        home,
        FrequentResult(
            path=str((u.path / "frequent.npy").relative_to(home)),
            digest=hashlib.sha256(buf.getvalue()).hexdigest(),
            max_docs=spec.max_docs,
            ignored=len(frequent),
            found=len(total),
        ),
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


def run_index(spec: IndexSpec, home: Path) -> IndexResult:
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
    return spec.finish(
        home,
        IndexResult(
            path=str(u.path.relative_to(home)),
            digest=index.digest(),
            ngram=spec.ngram,
            ngrams=int(len(index.hashes)),
            **index.coverage(),
        ),
    )


CountSpec.Result = CountResult
FrequentSpec.Result = FrequentResult
IndexSpec.Result = IndexResult
