"""The vocab stage: the filter output's train split Moses-tokenized one unit per document
shard (fanned out by the orchestrator), then BPE learned on all of it in one unit. The stage
output holds the tokenizer files (`Tokenizer.load(<vocab output>)`, copied from the BPE unit);
its manifest is `VocabManifest`.

Units: one `MosesSpec` per document shard (its train documents, Moses-tokenized in file order,
in `moses.parquet`), then one `BpeSpec` over all of them: it reads the Moses files back in
shard order, each checked first against its unit's manifest (size and sha256; a unit that does
not match is made again there), learns BPE and measures the unknown rate on the validation
split. The learning sees the documents in the order one process tokenizing them all would
(`mediswift.text.vocab.build_vocab`), so the tokenizer is byte-identical to that, whatever ran
the Moses units and however many they were.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

from mediswift.artifacts import Artifact, file_digest, write_atomic
from mediswift.data.quarantine import move_aside
from mediswift.manifests import FilterManifest, VocabManifest
from mediswift.sections import VocabConfig
from mediswift.stage_def import StageDef
from mediswift.text import moses
from mediswift.text.vocab import learn_vocab, moses_shard, read_moses_file
from mediswift.units import UnitResult, UnitSpec, unkeyed

# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs.
STAGE = StageDef("vocab", inputs=("filter",), manifest=VocabManifest, version=3)

log = logging.getLogger(__name__)

MOSES_FILE = "moses.parquet"


class MosesSpec(UnitSpec):
    """One document shard's train split, Moses-tokenized."""

    stage: ClassVar[str] = "vocab"
    kind: ClassVar[str] = "moses"
    version: ClassVar[int] = 1

    doc_shard: str  # under home, inside a content-keyed filter unit
    moses: dict[str, Any]  # the Moses settings (`mediswift.text.moses.SETTINGS`)
    name: str = unkeyed("", "the unit's run name in the UI")


class BpeSpec(UnitSpec):
    """The BPE vocabulary learned on every Moses unit, in shard order."""

    stage: ClassVar[str] = "vocab"
    kind: ClassVar[str] = "bpe"
    version: ClassVar[int] = 1

    vocab: VocabConfig  # held whole: its result settings are keyed, `workers` is not
    doc_shards: tuple[str, ...]  # under home; the validation split is read from them
    moses: tuple[str, ...]  # the Moses units' keys, in shard order


def doc_shard_paths(home: Path, filtered: FilterManifest) -> list[Path]:
    """The filter output's document shards, in manifest order, checked to exist."""
    paths = [home / s["path"] for s in filtered.shards]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the filter output lists missing shards: {missing}")
    return paths


# -- units ------------------------------------------------------------------------------------


def moses_spec(doc_shard: str, name: str = "") -> MosesSpec:
    return MosesSpec(doc_shard=doc_shard, moses=dict(moses.SETTINGS), name=name)


def moses_units(home: Path, filtered: FilterManifest) -> list[MosesSpec]:
    """One unit per document shard of the filter output, in manifest order (the position
    keeps run names unique when shards share a file name)."""
    return [
        moses_spec(str(shard.relative_to(home)), f"{i:04d}-{shard.stem}")
        for i, shard in enumerate(doc_shard_paths(home, filtered))
    ]


def bpe_unit(cfg: VocabConfig, moses_specs: list[MosesSpec]) -> BpeSpec:
    return BpeSpec(
        vocab=cfg,
        doc_shards=tuple(s.doc_shard for s in moses_specs),
        moses=tuple(s.key for s in moses_specs),
    )


# -- what the units return (their manifests) -------------------------------------------------


class MosesResult(UnitResult):
    input: str  # the document shard (relative to home)
    path: str  # its train documents after Moses (zstd Parquet, relative to home)
    bytes: int
    sha256: str
    n_docs: int
    text_chars: int
    moses_chars: int


class LearnedVocab(UnitResult):
    """The BPE unit: the tokenizer's files in the unit and what learning it saw (the stage's
    manifest holds the same)."""

    vocab_size: int
    hash: str
    special_ids: dict[str, int]
    files: list[str]
    unk_rate_validation: float
    validation_tokens: int
    train_docs: int
    train_lines: int
    sampled_lines: int
    longest_line_bytes: int
    moses: dict[str, Any]


MosesSpec.Result = MosesResult
BpeSpec.Result = LearnedVocab


# -- running one unit --------------------------------------------------------------------------


def run_moses(spec: MosesSpec, home: Path) -> MosesResult:
    """Moses-tokenize the shard's train documents into the unit (`moses.parquet`)."""
    if (done := spec.done_result(home)) is not None:
        return done
    u = spec.artifact(home).ensure()
    out = u.path / MOSES_FILE
    counts = moses_shard(home / spec.doc_shard, out)
    return spec.finish(
        home,
        MosesResult(
            input=spec.doc_shard,
            path=str(out.relative_to(home)),
            bytes=out.stat().st_size,
            sha256=file_digest(out),
            **counts,
        ),
    )


def file_problem(path: Path, listed: MosesResult) -> str | None:
    """What is wrong with `path` against its manifest entry (`bytes`, `sha256`), or None."""
    if not path.is_file():
        return "is missing"
    size = path.stat().st_size
    if size != listed.bytes:
        return f"has {size} bytes, its manifest says {listed.bytes}"
    if file_digest(path) != listed.sha256:
        return "does not match the sha256 in its manifest"
    return None


def verified_moses_file(
    spec: MosesSpec, home: Path, logger: logging.Logger | logging.LoggerAdapter = log
) -> Path:
    """The unit's Moses file, checked against its manifest. A unit not done, or whose file
    does not match (the file is moved to `<home>/quarantine/`), is made again here."""
    done = spec.done_result(home)
    if done is not None:
        path = home / done.path
        problem = file_problem(path, done)
        if problem is None:
            return path
        logger.warning("vocab: %s %s: its Moses unit is made again", path, problem)
        move_aside(home, path)
        spec.artifact(home).manifest_path.unlink(missing_ok=True)
    return home / run_moses(spec, home).path


def _moses_specs(spec: BpeSpec) -> list[MosesSpec]:
    """The Moses units `spec` reads, rebuilt from its shards (and checked against its keys)."""
    specs = [moses_spec(d) for d in spec.doc_shards]
    if tuple(s.key for s in specs) != spec.moses:
        raise RuntimeError("the BPE unit lists Moses units that this code does not make")
    return specs


def run_bpe(
    spec: BpeSpec, home: Path, logger: logging.Logger | logging.LoggerAdapter = log
) -> LearnedVocab:
    """Learn the vocabulary from the Moses units' files into the unit (bpe.model +
    tokenizer.json); its manifest is the stage's."""
    if (done := spec.done_result(home)) is not None:
        return done
    files = [verified_moses_file(m, home, logger) for m in _moses_specs(spec)]
    u = spec.artifact(home).ensure()
    cfg = spec.vocab
    result = learn_vocab(
        (doc for f in files for doc in read_moses_file(f)),
        [home / d for d in spec.doc_shards],
        u.path,
        vocab_size=cfg.vocab_size,
        sample_sentences=cfg.sample_sentences,
        seed=cfg.seed,
        character_coverage=cfg.character_coverage,
    )
    return spec.finish(home, LearnedVocab.model_validate(result))


# -- the manifest ------------------------------------------------------------------------------


def collect(
    home: Path,
    spec: BpeSpec,
    learned: LearnedVocab,
    out: Artifact,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> VocabManifest:
    """Copy the tokenizer files of the BPE unit into the stage output `out` (the caller writes
    its manifest) and return that manifest."""
    manifest = VocabManifest.model_validate(learned.model_dump())
    unit = spec.artifact(home).path
    for name in learned.files:
        write_atomic(out.ensure().path / name, (unit / name).read_bytes())
    r = learned
    logger.info(
        "vocab: %d entries learned on %d train documents (%d of %d lines); "
        "unk rate on validation %.2e over %d tokens",
        r.vocab_size, r.train_docs, r.sampled_lines, r.train_lines,
        r.unk_rate_validation, r.validation_tokens,
    )  # fmt: skip
    return manifest
