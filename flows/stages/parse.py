"""The parse stage: one task per PubMed file, per batch of PMC articles and per extra corpus,
then the manifest last (format: the `parse` entry of the stage manifests).

Shards are listed in the order the filter needs for "latest wins": PubMed files in download
order (baseline, then updates), then PMC batches, then corpora. Each PubMed shard entry carries
the PMIDs its file deletes (`deleted_pmids`, on the file's last shard).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture

from mediswift import manifests
from mediswift.artifacts import Artifact, file_digest, unit_artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import DownloadManifest, ParseManifest
from tasks import parse as t
from tasks.common import cached


def _unit(home: Path, kind: str, content: Any, cfg: PipelineConfig) -> Artifact:
    settings = cfg.parse.result_settings()
    return unit_artifact(home, "parse", kind, content, settings, t.PARSER_VERSION)


def heal(home: Path, download: Artifact, quarantined: list[dict[str, str]]) -> None:
    """Make the next run retry exactly the quarantined inputs: move each raw file aside (to
    `<home>/quarantine/`, for inspection), so its download unit no longer holds and fetches it
    again, and reopen the download stage; every other unit stays done."""
    for q in quarantined:
        src = home / q["input"]
        if src.is_file():
            dest = home / "quarantine" / q["input"]
            dest.parent.mkdir(parents=True, exist_ok=True)
            src.replace(dest)
    download.manifest_path.unlink(missing_ok=True)


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    log = get_run_logger()
    dl = manifests.read(inputs["download"], DownloadManifest).model_dump()
    p = cfg.parse
    h = str(home)
    limits = [p.max_xml_bytes, p.max_xml_node_bytes]  # bounded memory for any input
    jobs: list[tuple[str, PrefectFuture[Any], dict[str, Any]]] = []

    for entry in dl.get("pubmed", []):
        u = _unit(home, "pubmed", entry["md5"], cfg)
        fut = cached(t.parse_pubmed, home, u).submit(
            key=u.key, home=h, input=entry["path"], rows_per_shard=p.rows_per_shard,
            on_error=p.on_error, limits=limits,
        )  # fmt: skip
        jobs.append(("pubmed", fut, {"input": entry["path"]}))

    articles = dl.get("pmc", [])
    size = p.pmc_articles_per_shard
    for i in range(0, len(articles), size):
        batch = articles[i : i + size]
        u = _unit(
            home,
            "pmc",
            [(a["path"], a.get("md5"), a.get("pmid"), a.get("license")) for a in batch],
            cfg,
        )
        fut = cached(t.parse_pmc, home, u).submit(
            key=u.key, home=h, index=i // size, articles=batch, rows_per_shard=p.rows_per_shard,
            on_error=p.on_error, limits=limits,
        )  # fmt: skip
        jobs.append(("pmc", fut, {"input": batch[0]["path"], "n_inputs": len(batch)}))

    for entry in dl.get("corpora", []):
        digest = file_digest(home / entry["path"], "md5")
        u = _unit(home, "corpus", [entry["name"], digest], cfg)
        fut = cached(t.parse_corpus, home, u).submit(
            key=u.key, home=h, input=entry["path"], name=entry["name"],
            rows_per_shard=p.rows_per_shard, on_error=p.on_error,
        )  # fmt: skip
        jobs.append(("corpus", fut, {"input": entry["path"]}))

    log.info("parse: %d tasks submitted", len(jobs))
    shards: list[dict[str, Any]] = []
    deleted: list[str] = []
    quarantined: list[dict[str, str]] = []
    counts: dict[str, Counter[str]] = {"pubmed": Counter(), "pmc": Counter(), "corpus": Counter()}
    for source, fut, info in jobs:
        r = fut.result()  # raises the task's error (naming the file) when it failed
        quarantined += r["quarantined"]
        counts[source].update(r.get("counts", {}))
        entries = [{**s, **info, "source": source} for s in r["shards"]]
        if source == "pubmed" and entries:
            entries[-1]["deleted_pmids"] = r["deleted_pmids"]
            deleted += r["deleted_pmids"]
        shards += entries
    for q in quarantined:
        log.warning("parse: quarantined %s: %s", q["input"], q["error"])
    if len(quarantined) > p.max_quarantined:
        heal(home, inputs["download"], quarantined)
        raise RuntimeError(
            f"parse: {len(quarantined)} input file(s) quarantined (parse.max_quarantined is "
            f"{p.max_quarantined}): {', '.join(q['input'] for q in quarantined)}; the next run "
            "fetches and parses exactly these again"
        )
    total = {
        "documents": sum(s["n_docs"] for s in shards),
        "shards": len(shards),
        "quarantined": len(quarantined),
        **{src: dict(c) for src, c in counts.items()},
    }
    log.info("parse: %s", total)
    manifest = ParseManifest(
        shards=shards, deleted_pmids=deleted, quarantined=quarantined, counts=total
    )
    return manifests.write(out, manifest)
