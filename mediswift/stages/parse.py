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
from mediswift.data.quarantine import move_aside
from mediswift.data.xml import XMLLimits, XMLParseError
from mediswift.manifests import DownloadManifest, ParseManifest
from mediswift.settings import ParseConfig
from mediswift.units import UnitSpec, unkeyed

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


def _finish(spec: ParseSpec, home: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Make shard paths relative to home, then mark the unit done (manifest last), unless it
    quarantined an input."""
    result["shards"] = [
        {"path": str(p.relative_to(home)), "n_docs": n} for p, n in result["shards"]
    ]
    if not result["quarantined"]:
        spec.artifact(home).ensure().write_manifest(result)
    return result


def run_unit(spec: ParseSpec, home: Path) -> dict[str, Any]:
    """Parse the unit's input into document shards under its directory."""
    if (done := spec.done_result(home)) is not None:
        return done
    out = spec.artifact(home).path
    limits = XMLLimits(*spec.limits)
    if isinstance(spec, PmcSpec):
        inputs = [
            PmcInput(path=home / a.path, label=a.path, hints=PmcHints(a.pmcid, a.pmid, a.license))
            for a in spec.articles
        ]
        quarantine = spec.on_error == "quarantine"
        result = parse_pmc_batch(inputs, out, spec.rows_per_shard, quarantine, limits)
        return _finish(spec, home, result)
    try:
        if isinstance(spec, PubmedSpec):
            result = parse_pubmed_file(home / spec.input, out, spec.rows_per_shard, limits)
        else:
            assert isinstance(spec, CorpusSpec)
            result = parse_corpus_file(
                home / spec.input, spec.name, out, spec.rows_per_shard, limits.max_record_bytes
            )
    except BAD_INPUT as e:
        if spec.on_error != "quarantine":
            raise
        result = {"shards": [], "quarantined": [{"input": spec.label, "error": str(e)}]}
        return _finish(spec, home, result)
    return _finish(spec, home, {**result, "quarantined": []})


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
    results: list[dict[str, Any]],
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> ParseManifest:
    """The manifest, or (more inputs quarantined than the recipe accepts) an error after
    healing: the next run fetches and parses exactly the quarantined inputs again."""
    shards: list[dict[str, Any]] = []
    deleted: list[str] = []
    quarantined: list[dict[str, str]] = []
    counts: dict[str, Counter[str]] = {"pubmed": Counter(), "pmc": Counter(), "corpus": Counter()}
    for spec, r in zip(specs, results, strict=True):
        quarantined += r["quarantined"]
        counts[spec.source].update(r.get("counts", {}))
        info: dict[str, Any] = {"input": spec.label}
        if isinstance(spec, PmcSpec):
            info["n_inputs"] = len(spec.articles)
        entries = [{**s, **info, "source": spec.source} for s in r["shards"]]
        if isinstance(spec, PubmedSpec) and entries:
            entries[-1]["deleted_pmids"] = r["deleted_pmids"]
            deleted += r["deleted_pmids"]
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
