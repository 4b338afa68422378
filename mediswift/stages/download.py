"""The download stage: one unit per PubMed file, per batch of PMC articles and per extra
corpus, after the listing decided what to fetch; the manifest (`DownloadManifest`) lists every
raw file in download order.

Raw files go to `<home>/raw/<upstream layout>`, shared by every download config, so changing a
recipe's limits fetches only what is new. A unit whose files have gone from `raw/` is no longer
done (`forget_if_gone`), so its task fetches them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from mediswift.data.corpus import MAX_LINE_BYTES
from mediswift.data.download import client_for
from mediswift.data.pmc_files import PmcArticle, fetch_pmc_batch
from mediswift.data.pubmed_files import PubmedFile, fetch_pubmed
from mediswift.data.sources import corpus_name, fetch_corpus
from mediswift.manifests import DownloadManifest
from mediswift.sections import Connection, DownloadConfig
from mediswift.stage_def import StageDef
from mediswift.units import UnitResult, UnitSpec, unkeyed

# 2: settings classified (keys hash result settings), downstream tasks as plug-ins that fetch
# their own data, typed manifests. 3: unit keys from typed unit specs.
STAGE = StageDef("download", inputs=(), manifest=DownloadManifest, version=3)

CONNECTION = "how to connect: timeouts, retries, User-Agent (never the content)"


class DownloadSpec(UnitSpec):
    stage: ClassVar[str] = "download"
    # 2: keys are the unit specs.
    version: ClassVar[int] = 2

    connection: Connection = unkeyed(default_factory=Connection, description=CONNECTION)

    @property
    def name(self) -> str:
        """What the progress lines call the unit."""
        raise NotImplementedError

    @property
    def run_name(self) -> str:
        """What the UI calls the unit's task run."""
        raise NotImplementedError


class PubmedFileSpec(DownloadSpec):
    kind: ClassVar[str] = "pubmed"
    file: PubmedFile

    @property
    def name(self) -> str:
        return f"pubmed/{self.file.name}"

    @property
    def run_name(self) -> str:
        return f"pubmed-{self.file.name}"


class PmcBatchSpec(DownloadSpec):
    kind: ClassVar[str] = "pmc"
    base: str
    articles: tuple[PmcArticle, ...]
    index: int = unkeyed(0, "the batch's position (its run name in the UI)")

    @property
    def name(self) -> str:
        return f"pmc/{self.index}"

    @property
    def run_name(self) -> str:
        return f"pmc-batch-{self.index}"


class CorpusSpec(DownloadSpec):
    kind: ClassVar[str] = "corpus"
    spec: str  # URL or path, mapped onto the mirror
    mirror: str | None
    given: str = unkeyed("", "the corpus as the recipe names it")
    max_line_bytes: int = unkeyed(MAX_LINE_BYTES, "longest line the check accepts (bytes)")

    @property
    def name(self) -> str:
        return f"corpus/{self.given}"

    @property
    def run_name(self) -> str:
        return f"corpus-{self.spec}"


def check_corpora(cfg: DownloadConfig) -> None:
    names = [corpus_name(s) for s in cfg.extra_corpora]
    if len(set(names)) != len(names):
        raise ValueError(f"download.extra_corpora: two corpora share a file name: {names}")


class PubmedFileResult(UnitResult):
    path: str  # raw/pubmed/<folder>/<name>
    kind: str  # baseline or update
    md5: str
    bytes: int
    fetched: bool  # whether this run downloaded it (not part of the stage's contract)


class PmcEntry(BaseModel):
    path: str  # raw/pmc/<article>.xml
    metadata: str  # its metadata record
    pmcid: str
    pmid: str | None
    license: str
    md5: str
    fetched: bool


class PmcBatchResult(UnitResult):
    entries: list[PmcEntry]


class CorpusResult(UnitResult):
    path: str  # raw/corpus/<name>.jsonl
    name: str
    source: str  # where it was fetched from
    records: int


PubmedFileSpec.Result = PubmedFileResult
PmcBatchSpec.Result = PmcBatchResult
CorpusSpec.Result = CorpusResult
DownloadResult = PubmedFileResult | PmcBatchResult | CorpusResult


class PmcSelection(BaseModel):
    """The PMC articles the listing selected, and how many it skipped, by reason."""

    articles: list[PmcArticle]
    skipped: dict[str, int]


def units(
    cfg: DownloadConfig,
    resolve: Any,
    mirror: str | None,
    files: list[PubmedFile],
    articles: list[PmcArticle],
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[DownloadSpec]:
    """Corpora, then PubMed files in listing order, then PMC batches of `pmc_batch_size`.
    A corpus is checked as it is fetched, with the parse stage's cap on a line
    (`parse.max_record_bytes`)."""
    specs: list[DownloadSpec] = [
        CorpusSpec(
            spec=resolve(given),
            mirror=mirror,
            given=given,
            connection=cfg.connection(),
            max_line_bytes=max_line_bytes,
        )
        for given in cfg.extra_corpora
    ]
    specs += [PubmedFileSpec(file=f, connection=cfg.connection()) for f in files]
    base, size = resolve(cfg.pmc_url), cfg.pmc_batch_size
    specs += [
        PmcBatchSpec(
            base=base,
            articles=tuple(articles[i : i + size]),
            index=i // size,
            connection=cfg.connection(),
        )
        for i in range(0, len(articles), size)
    ]
    return specs


def raw_paths(result: dict[str, Any] | DownloadResult) -> list[str]:
    """Every raw path a unit result names (to check the unit is still intact on disk)."""
    if isinstance(result, BaseModel):
        result = result.model_dump()
    found: list[str] = []
    for k, v in result.items():
        if isinstance(v, str) and k in ("path", "metadata"):
            found.append(v)
        elif isinstance(v, dict):
            found += raw_paths(v) if k != "files" else [p for p in v.values() if isinstance(p, str)]
        elif isinstance(v, list):
            found += [p for item in v if isinstance(item, dict) for p in raw_paths(item)]
    return found


def forget_if_gone(spec: DownloadSpec, home: Path) -> None:
    """A done unit whose raw files are gone is done no more: its task fetches them again."""
    art = spec.artifact(home)
    if art.done() and not all((home / p).is_file() for p in raw_paths(art.manifest())):
        art.manifest_path.unlink(missing_ok=True)


def unit_files(home: Path, result: DownloadResult) -> tuple[int, int]:
    """(files, bytes) a unit result names: what a progress line counts."""
    paths = raw_paths(result)
    return len(paths), sum((home / p).stat().st_size for p in paths)


def run_unit(spec: DownloadSpec, home: Path) -> DownloadResult:
    """Fetch the unit's files (md5-verified where upstream publishes md5s) into `raw/`."""
    client, raw = client_for(spec.connection), home / "raw"
    if isinstance(spec, PubmedFileSpec):
        result = PubmedFileResult.model_validate(fetch_pubmed(client, raw, spec.file))
    elif isinstance(spec, PmcBatchSpec):
        entries = fetch_pmc_batch(client, spec.base, raw, list(spec.articles))
        result = PmcBatchResult(entries=[PmcEntry.model_validate(e) for e in entries])
    else:
        assert isinstance(spec, CorpusSpec)
        made = fetch_corpus(client, spec.spec, spec.mirror, raw, spec.max_line_bytes)
        result = CorpusResult.model_validate(made)
    return spec.finish(home, result)


def collect(
    specs: list[DownloadSpec],
    results: list[DownloadResult],
    skipped_pmc: dict[str, int],
) -> dict[str, Any]:
    """The manifest's content: PubMed entries in listing order, PMC entries batch by batch,
    corpora as the recipe lists them, and counts."""
    by_kind: dict[str, list[dict[str, Any]]] = {"pubmed": [], "pmc": [], "corpus": []}
    for spec, r in zip(specs, results, strict=True):
        by_kind[spec.kind].append(r.model_dump())
    pubmed = by_kind["pubmed"]
    pmc = [e for r in by_kind["pmc"] for e in r["entries"]]
    corpora = by_kind["corpus"]
    # `fetched` says whether the first run of a unit downloaded it: not part of the contract.
    clean = [
        {k: v for k, v in e.items() if k not in ("fetched", "stage", "key")} for e in pubmed + pmc
    ]
    counts = {
        "pubmed_baseline": sum(e["kind"] == "baseline" for e in pubmed),
        "pubmed_update": sum(e["kind"] == "update" for e in pubmed),
        "pubmed_bytes": sum(e["bytes"] for e in pubmed),
        "pmc_articles": len(pmc),
        "corpora": len(corpora),
        "corpus_records": sum(c.get("records", 0) for c in corpora),
        "pmc_skipped": sum(skipped_pmc.values()),
    }
    return {
        "pubmed": clean[: len(pubmed)],
        "pmc": clean[len(pubmed) :],
        "corpora": [{k: c[k] for k in ("path", "name", "source", "records")} for c in corpora],
        "counts": counts,
        "skipped": {"pmc": skipped_pmc},
    }
