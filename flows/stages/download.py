"""The download stage: list upstream, submit one task per file / article batch / dataset,
wait, and write the manifest last (format: the `download` entry of the stage manifests).

Raw files go to `<home>/raw/<upstream layout>`, shared by every download config, so changing a
recipe's limits fetches only what is new.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed

from mediswift.artifacts import Artifact, unit_artifact
from mediswift.config import PipelineConfig
from mediswift.data.sources import corpus_name
from tasks import download as t
from tasks.common import cached


def _paths(result: dict[str, Any]) -> list[str]:
    """Every raw path a unit result names (to check the unit is still intact on disk)."""
    found: list[str] = []
    for k, v in result.items():
        if isinstance(v, str) and k in ("path", "metadata"):
            found.append(v)
        elif isinstance(v, dict):
            found += _paths(v) if k != "files" else [p for p in v.values() if isinstance(p, str)]
        elif isinstance(v, list):
            found += [p for item in v if isinstance(item, dict) for p in _paths(item)]
    return found


def _unit(home: Path, *parts: Any) -> Artifact:
    """A unit artifact, forgotten when a file it produced has gone (so its task runs again)."""
    art = unit_artifact(home, "download", *parts)
    if art.done() and not all((home / p).is_file() for p in _paths(art.manifest())):
        art.manifest_path.unlink(missing_ok=True)
    return art


class Progress:
    """Logs files done / total, MB, MB/s and an ETA as units finish."""

    def __init__(self, home: Path, total_files: int, every_s: float = 5.0):
        self.home, self.total, self.done, self.bytes = home, total_files, 0, 0
        self.start = self.last = time.monotonic()
        self.every_s = every_s
        self.log = get_run_logger()

    def update(self, name: str, result: dict[str, Any]) -> None:
        paths = _paths(result)
        self.done += len(paths)
        self.bytes += sum((self.home / p).stat().st_size for p in paths)
        now = time.monotonic()
        if now - self.last < self.every_s and self.done < self.total:
            return  # at most one line every few seconds, and always the last one
        self.last = now
        dt = max(now - self.start, 1e-6)
        eta = dt / self.done * (self.total - self.done) if self.done else float("nan")
        self.log.info(
            "download: %s; %d/%d files, %.1f MB, %.1f MB/s, ETA %.0fs",
            name,
            min(self.done, self.total),
            self.total,
            self.bytes / 1e6,
            self.bytes / 1e6 / dt,
            max(eta, 0.0),
        )


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    d = cfg.download
    h = str(home)
    log = get_run_logger()
    names_seen = [corpus_name(s) for s in d.extra_corpora]
    if len(set(names_seen)) != len(names_seen):
        raise ValueError(f"download.extra_corpora: two corpora share a file name: {names_seen}")
    pubmed_base = cfg.resolve(d.pubmed_url)
    pmc_base = cfg.resolve(d.pmc_url)

    # Listing first (both in parallel): what to fetch is decided before anything is fetched.
    pubmed_list = t.list_pubmed_files.submit(d, pubmed_base)
    pmc_sel = t.select_pmc_articles.submit(d, pmc_base, h)
    files = pubmed_list.result()
    selection = pmc_sel.result()
    articles = selection["articles"]
    log.info("download: %d PubMed files, %d PMC articles selected", len(files), len(articles))

    futures: dict[str, PrefectFuture[Any]] = {}
    names: dict[PrefectFuture[Any], str] = {}

    def submit(name: str, task: Any, unit: Artifact, **params: Any) -> None:
        fut = cached(task, home, unit).submit(key=unit.key, home=h, cfg=d, **params)
        futures[name] = fut
        names[fut] = name

    for f in files:
        submit(f"pubmed/{f['name']}", t.download_pubmed_file, _unit(home, "pubmed", f), file=f)
    size = d.pmc_batch_size
    for i in range(0, len(articles), size):
        batch = articles[i : i + size]
        unit = _unit(home, "pmc", pmc_base, batch)
        submit(
            f"pmc/{i // size}",
            t.download_pmc_batch,
            unit,
            base=pmc_base,
            articles=batch,
            index=i // size,
        )
    qa_base, hoc_base = cfg.resolve(d.pubmedqa_url), cfg.resolve(d.hoc_url)
    submit("pubmedqa", t.download_pubmedqa, _unit(home, "pubmedqa", qa_base), base=qa_base)
    submit("hoc", t.download_hoc, _unit(home, "hoc", hoc_base), base=hoc_base)
    for spec in d.extra_corpora:
        unit = _unit(home, "corpus", spec, cfg.mirror)
        submit(f"corpus/{spec}", t.download_corpus, unit, spec=spec, mirror=cfg.mirror)

    n_files = len(files) + 2 * len(articles) + 5 + len(d.extra_corpora)
    progress = Progress(home, n_files)
    for fut in as_completed(list(futures.values())):
        progress.update(names[fut], fut.result())  # re-raises the first failure, by name
    return out.ensure().write_manifest(
        _manifest(futures, selection["skipped"], files, d.extra_corpora)
    )


def _manifest(
    futures: dict[str, PrefectFuture[Any]],
    skipped_pmc: dict[str, int],
    files: list[dict[str, Any]],
    corpora_specs: list[str],
) -> dict[str, Any]:
    pubmed = [futures[f"pubmed/{f['name']}"].result() for f in files]
    pmc = [e for k, fut in futures.items() if k.startswith("pmc/") for e in fut.result()["entries"]]
    corpora = [futures[f"corpus/{s}"].result() for s in corpora_specs]
    # `fetched` says whether the first run of a unit downloaded it: not part of the contract.
    clean = [{k: v for k, v in e.items() if k != "fetched"} for e in pubmed + pmc]
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
        "pubmedqa": futures["pubmedqa"].result()["files"],
        "hoc": futures["hoc"].result()["files"],
        "corpora": [{k: c[k] for k in ("path", "name", "source", "records")} for c in corpora],
        "counts": counts,
        "skipped": {"pmc": skipped_pmc},
    }
