"""The download stage: list upstream, submit one task per file / article batch / corpus,
wait, and write the manifest last (`mediswift.manifests.DownloadManifest`). Downstream tasks'
datasets are fetched by the finetune stage (a new task must not re-key the corpus).

Raw files go to `<home>/raw/<upstream layout>`, shared by every download config, so changing a
recipe's limits fetches only what is new.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed

from mediswift import manifests
from mediswift.artifacts import Artifact, unit_artifact
from mediswift.config import DownloadConfig, PipelineConfig
from mediswift.data.sources import corpus_name
from mediswift.manifests import DownloadManifest
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
    """Logs files done / total, MB, MB/s and an ETA as units finish; a progress bar in the UI."""

    def __init__(self, home: Path, total_files: int, every_s: float = 5.0):
        self.home, self.total, self.done, self.bytes = home, total_files, 0, 0
        self.start = self.last = time.monotonic()
        self.every_s = every_s
        self.log = get_run_logger()
        self.artifact = create_progress_artifact(progress=0.0, description="download: files")

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
        pct = 100.0 * min(self.done, self.total) / max(self.total, 1)
        update_progress_artifact(artifact_id=self.artifact, progress=pct)


@dataclass
class Job:
    """One download task to submit: its display name, task, unit and parameters."""

    name: str
    task: Any
    unit: Artifact
    params: dict[str, Any]


def _jobs(cfg: PipelineConfig, home: Path, files: list[dict], articles: list[dict]) -> list[Job]:
    d = cfg.download
    jobs = []
    for given in d.extra_corpora:
        spec = cfg.resolve(given)  # a real upstream URL maps onto the mirror like the others
        unit = _unit(home, "corpus", spec, cfg.mirror)
        jobs.append(
            Job(f"corpus/{given}", t.download_corpus, unit, {"spec": spec, "mirror": cfg.mirror})
        )
    for f in files:
        unit = _unit(home, "pubmed", f)
        jobs.append(Job(f"pubmed/{f['name']}", t.download_pubmed_file, unit, {"file": f}))
    pmc_base, size = cfg.resolve(d.pmc_url), d.pmc_batch_size
    for i in range(0, len(articles), size):
        batch = articles[i : i + size]
        params = {"base": pmc_base, "articles": batch, "index": i // size}
        jobs.append(
            Job(
                f"pmc/{i // size}",
                t.download_pmc_batch,
                _unit(home, "pmc", pmc_base, batch),
                params,
            )
        )
    return jobs


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    d = cfg.download
    log = get_run_logger()
    names_seen = [corpus_name(s) for s in d.extra_corpora]
    if len(set(names_seen)) != len(names_seen):
        raise ValueError(f"download.extra_corpora: two corpora share a file name: {names_seen}")

    # Listing first (both at once): what to fetch is decided before anything is fetched.
    pubmed_list = t.list_pubmed_files.submit(d, cfg.resolve(d.pubmed_url))
    pmc_sel = t.select_pmc_articles.submit(d, cfg.resolve(d.pmc_url), str(home))
    files, selection = pubmed_list.result(), pmc_sel.result()
    articles = selection["articles"]
    log.info("download: %d PubMed files, %d PMC articles selected", len(files), len(articles))

    jobs = _jobs(cfg, home, files, articles)
    results = _run_windowed(jobs, home, d, d.max_connections * 4)
    manifest = _manifest(results, selection["skipped"], files, d.extra_corpora)
    return manifests.write(out, DownloadManifest.model_validate(manifest))


def _run_windowed(
    jobs: list[Job], home: Path, cfg: DownloadConfig, window: int
) -> dict[str, dict[str, Any]]:
    """Submit the jobs keeping at most `window` in flight (the default thread pool is
    unbounded, and a thousand threads queueing on three connections help nobody)."""
    n_files = sum(2 * len(j.params.get("articles", [])) or 1 for j in jobs)
    progress = Progress(home, n_files)
    pending = deque(jobs)
    running: dict[PrefectFuture[Any], str] = {}
    results: dict[str, dict[str, Any]] = {}
    while pending or running:
        while pending and len(running) < window:
            j = pending.popleft()
            task = cached(j.task, home, j.unit)
            running[task.submit(key=j.unit.key, home=str(home), cfg=cfg, **j.params)] = j.name
        fut = next(as_completed(list(running)))
        name = running.pop(fut)
        results[name] = fut.result()  # re-raises a failure, whose message names the file
        progress.update(name, results[name])
    return results


def _manifest(
    results: dict[str, dict[str, Any]],
    skipped_pmc: dict[str, int],
    files: list[dict[str, Any]],
    corpora_specs: list[str],
) -> dict[str, Any]:
    pubmed = [results[f"pubmed/{f['name']}"] for f in files]
    batches = sorted((int(k.split("/")[1]), r) for k, r in results.items() if k.startswith("pmc/"))
    pmc = [e for _, r in batches for e in r["entries"]]
    corpora = [results[f"corpus/{s}"] for s in corpora_specs]
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
        "corpora": [{k: c[k] for k in ("path", "name", "source", "records")} for c in corpora],
        "counts": counts,
        "skipped": {"pmc": skipped_pmc},
    }
