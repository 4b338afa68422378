"""The parse stage: one unit per PubMed file, per batch of PMC articles and per extra corpus;
the manifest lists their shards in the order the filter needs for "latest wins" (PubMed files
in download order, baseline then updates; then PMC batches; then corpora). Each PubMed shard
entry carries the PMIDs its file deletes (`deleted_pmids`, on the file's last shard).

A bad input fails its unit (naming the file and position) unless `parse.on_error` is
"quarantine": then the unit returns it under "quarantined", leaves no shard for it and is not
marked done, so the next run tries it again.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from mediswift.artifacts import Artifact, file_digest
from mediswift.data.corpus import CorpusFormatError, parse_corpus_file
from mediswift.data.pmc import PmcHints, PmcInput, parse_pmc_batch
from mediswift.data.pubmed import parse_pubmed_file
from mediswift.data.quarantine import RawFileError, move_aside, reopen_listing
from mediswift.data.xml import XMLLimits, XMLParseError
from mediswift.manifests import DownloadManifest, ParseManifest
from mediswift.sections import ParseConfig
from mediswift.stage_def import StageDef
from mediswift.units import UnitResult, UnitSpec, unkeyed

# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs.
STAGE = StageDef("parse", inputs=("download",), manifest=ParseManifest, version=3)

log = logging.getLogger(__name__)

# Bump when the parsers' output changes: it re-keys every parse unit.
# 2: no UNLABELLED label, PMC summary/synopsis headings kept, earliest publication year.
# 3: keys are the unit specs. 4: `revised` (PubMed DateRevised) in the documents.
# 5: `published` (PMC's earliest publication date) in the documents.
PARSER_VERSION = 5

BAD_INPUT = (XMLParseError, CorpusFormatError, ValueError, OSError)


class Article(BaseModel):
    """One PMC article of a batch: its file and the metadata hints the listing gave."""

    model_config = ConfigDict(frozen=True)

    path: str
    md5: str | None = None
    pmcid: str | None = None
    pmid: str | None = None
    license: str | None = None


class ParseSpec(UnitSpec):
    """What every parse unit reads besides its input: shard size, and (unkeyed) what to do with
    a bad file and the memory caps."""

    stage: ClassVar[str] = "parse"
    version: ClassVar[int] = PARSER_VERSION

    rows_per_shard: int
    on_error: str = unkeyed("fail", "fail, or quarantine a bad input")
    limits: tuple[int, int, int, int, int] = unkeyed(
        (2**31, 2**26, 100_000_000, 500_000, 2**26),
        "XML caps: file bytes, node bytes, file nodes, record nodes, record (or corpus line) bytes",
    )

    @property
    def source(self) -> str:
        return self.kind

    @property
    def run_name(self) -> str:
        """What the UI calls the unit's task run."""
        return f"parse-{self.kind}-{self.label}"

    @property
    def label(self) -> str:
        raise NotImplementedError


class PubmedSpec(ParseSpec):
    kind: ClassVar[str] = "pubmed"

    input: str = unkeyed("", "the raw file under home (its md5 is keyed)")
    md5: str

    @property
    def label(self) -> str:
        return self.input


class PmcSpec(ParseSpec):
    kind: ClassVar[str] = "pmc"

    articles: tuple[Article, ...]
    index: int = unkeyed(0, "the batch's position (its run name in the UI)")

    @property
    def label(self) -> str:
        return self.articles[0].path

    @property
    def run_name(self) -> str:
        return f"parse-pmc-batch-{self.index}"


class CorpusSpec(ParseSpec):
    kind: ClassVar[str] = "corpus"

    input: str = unkeyed("", "the raw file under home (its md5 is keyed)")
    name: str
    md5: str

    @property
    def label(self) -> str:
        return self.input

    @property
    def run_name(self) -> str:
        return f"parse-corpus-{self.name}"


def units(cfg: ParseConfig, download: DownloadManifest, home: Path) -> list[ParseSpec]:
    """Every parse unit, in the order the manifest lists their shards."""
    run = {
        "rows_per_shard": cfg.rows_per_shard,
        "on_error": cfg.on_error,
        "limits": (
            cfg.max_xml_bytes,
            cfg.max_xml_node_bytes,
            cfg.max_xml_nodes,
            cfg.max_xml_record_nodes,
            cfg.max_record_bytes,
        ),
    }
    specs: list[ParseSpec] = [
        PubmedSpec(input=e["path"], md5=e["md5"], **run) for e in download.pubmed
    ]
    size = cfg.pmc_articles_per_shard
    articles = [
        Article.model_validate({k: a.get(k) for k in Article.model_fields}) for a in download.pmc
    ]
    specs += [
        PmcSpec(articles=tuple(articles[i : i + size]), index=i // size, **run)
        for i in range(0, len(articles), size)
    ]
    specs += [
        CorpusSpec(input=e["path"], name=e["name"], md5=file_digest(home / e["path"], "md5"), **run)
        for e in download.corpora
    ]
    return specs


class DocumentShard(BaseModel):
    path: str  # relative to home
    n_docs: int


class Quarantined(BaseModel):
    input: str  # the raw file (relative to home)
    error: str


class ParseResult(UnitResult):
    shards: list[DocumentShard]
    quarantined: list[Quarantined]  # inputs set aside (`parse.on_error: quarantine`)
    counts: dict[str, int] | None = None  # what the parser counted (records, skips...)
    deleted_pmids: list[str] | None = None  # PubMed: PMIDs the file deletes, in order


for _spec in (PubmedSpec, PmcSpec, CorpusSpec):
    _spec.Result = ParseResult


def _finish(spec: ParseSpec, home: Path, result: dict[str, Any]) -> ParseResult:
    """Make shard paths relative to home, then mark the unit done (manifest last), unless it
    quarantined an input."""
    result["shards"] = [
        {"path": str(p.relative_to(home)), "n_docs": n} for p, n in result["shards"]
    ]
    made = ParseResult.model_validate(result)
    return made if made.quarantined else spec.finish(home, made)


def run_unit(spec: ParseSpec, home: Path) -> ParseResult:
    """Parse the unit's input into document shards under its directory.

    A raw copy that does not match the md5 it was downloaded with, or whose content does not
    load, is quarantined with `parse.on_error: quarantine`; otherwise (the default) it is moved
    aside at once, the download stage is reopened and the unit fails with one line naming the
    file: the next run fetches it again (`heal_now`)."""
    if (done := spec.done_result(home)) is not None:
        return done
    out = spec.artifact(home).path
    limits = XMLLimits(*spec.limits)
    damaged = changed_copies(spec, home)
    if isinstance(spec, PmcSpec):
        bad = {d["input"] for d in damaged}
        inputs = [
            PmcInput(path=home / a.path, label=a.path, hints=PmcHints(a.pmcid, a.pmid, a.license))
            for a in spec.articles
            if a.path not in bad
        ]
        result = parse_pmc_batch(inputs, out, spec.rows_per_shard, True, limits)
        result["quarantined"] = damaged + result["quarantined"]
    elif damaged:
        result = {"shards": [], "quarantined": damaged}
    else:
        try:
            if isinstance(spec, PubmedSpec):
                result = parse_pubmed_file(home / spec.input, out, spec.rows_per_shard, limits)
            else:
                assert isinstance(spec, CorpusSpec)
                result = parse_corpus_file(
                    home / spec.input, spec.name, out, spec.rows_per_shard, limits.max_record_bytes
                )
        except BAD_INPUT as e:
            if spec.on_error != "quarantine" and not content_error(e):
                raise  # a fault of this machine (a full disk), not of the raw copy
            result = {"shards": [], "quarantined": [{"input": spec.label, "error": str(e)}]}
        else:
            result = {**result, "quarantined": []}
    if result["quarantined"] and spec.on_error != "quarantine":
        raise heal_now(home, result["quarantined"])
    return _finish(spec, home, result)


def content_error(e: BaseException) -> bool:
    """Whether a reading error is the raw copy's fault (bad bytes) rather than this machine's
    (an OSError with an errno: a full disk, a permission)."""
    return not (isinstance(e, OSError) and e.errno is not None)


def changed_copies(spec: ParseSpec, home: Path) -> list[dict[str, str]]:
    """The unit's raw files whose md5 is no longer the one they were downloaded with (bytes
    flipped or cut since), as quarantine entries. PubMed files and PMC articles carry their
    md5; a corpus publishes none (its content is checked as it is read)."""
    wanted: list[tuple[str, str]] = []
    if isinstance(spec, PubmedSpec):
        wanted = [(spec.input, spec.md5)]
    elif isinstance(spec, PmcSpec):
        wanted = [(a.path, a.md5) for a in spec.articles if a.md5]
    bad = []
    for rel, md5 in wanted:
        path = home / rel
        if not path.is_file():
            continue  # the parser names a missing file
        got = file_digest(path, "md5")
        if got != md5.lower():
            bad.append(
                {
                    "input": rel,
                    "error": f"{path}: md5 {got} is not the {md5} it was downloaded with",
                }
            )
    return bad


def heal_now(home: Path, bad: list[dict[str, str]]) -> RawFileError:
    """Move each bad raw copy aside and reopen every download stage output that lists it, so
    the next run fetches exactly these again; the error to raise, naming the (first) file."""
    lines = []
    for q in bad:
        path = home / q["input"]
        dest = move_aside(home, path)
        reopen_listing(home, "download", q["input"])
        where = f"moved aside to {dest}, " if dest is not None else ""
        lines.append(RawFileError(path, f"{q['error']}; {where}the next run fetches it again"))
    first = lines[0]
    if len(lines) == 1:
        return first
    return RawFileError(first.path, f"{first} (and {len(lines) - 1} more file(s) of the unit)")


def heal(home: Path, download: Artifact, quarantined: list[dict[str, str]]) -> None:
    """Make the next run retry exactly the quarantined inputs: move each raw file aside (to
    `<home>/quarantine/`, for inspection), so its download unit no longer holds and fetches it
    again, and reopen the download stage; every other unit stays done."""
    for q in quarantined:
        move_aside(home, home / q["input"])
    download.manifest_path.unlink(missing_ok=True)


def collect(
    cfg: ParseConfig,
    home: Path,
    download: Artifact,
    specs: list[ParseSpec],
    results: list[ParseResult],
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> ParseManifest:
    """The manifest, or (more inputs quarantined than the recipe accepts) an error after
    healing: the next run fetches and parses exactly the quarantined inputs again."""
    shards: list[dict[str, Any]] = []
    deleted: list[str] = []
    quarantined: list[dict[str, str]] = []
    counts: dict[str, Counter[str]] = {"pubmed": Counter(), "pmc": Counter(), "corpus": Counter()}
    for spec, r in zip(specs, results, strict=True):
        quarantined += [q.model_dump() for q in r.quarantined]
        counts[spec.source].update(r.counts or {})
        info: dict[str, Any] = {"input": spec.label}
        if isinstance(spec, PmcSpec):
            info["n_inputs"] = len(spec.articles)
        entries = [{**s.model_dump(), **info, "source": spec.source} for s in r.shards]
        if isinstance(spec, PubmedSpec) and entries:
            entries[-1]["deleted_pmids"] = r.deleted_pmids or []
            deleted += r.deleted_pmids or []
        shards += entries
    for q in quarantined:
        logger.warning("parse: quarantined %s: %s", q["input"], q["error"])
    if len(quarantined) > cfg.max_quarantined:
        heal(home, download, quarantined)
        raise RuntimeError(
            f"parse: {len(quarantined)} input file(s) quarantined (parse.max_quarantined is "
            f"{cfg.max_quarantined}): {', '.join(q['input'] for q in quarantined)}; the next run "
            "fetches and parses exactly these again"
        )
    total = {
        "documents": sum(s["n_docs"] for s in shards),
        "shards": len(shards),
        "quarantined": len(quarantined),
        **{src: dict(c) for src, c in counts.items()},
    }
    logger.info("parse: %s", total)
    return ParseManifest(
        shards=shards, deleted_pmids=deleted, quarantined=quarantined, counts=total
    )
