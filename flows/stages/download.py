"""The download stage: list upstream, submit one task per file / article batch / corpus,
wait, and write the manifest last (`mediswift.manifests.DownloadManifest`). Downstream tasks'
datasets are fetched by the finetune stage (a new task must not re-key the corpus).

Raw files go to `<home>/raw/<upstream layout>`, shared by every download config, so changing a
recipe's limits fetches only what is new.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture, as_completed

from mediswift import manifests
from mediswift.artifacts import Artifact
from mediswift.config import PipelineConfig
from mediswift.manifests import DownloadManifest
from mediswift.stages import download as S
from tasks import download as t
from tasks.common import submit_unit


class Progress:
    """Logs files done / total, MB, MB/s and an ETA as units finish; a progress bar in the UI."""

    def __init__(self, home: Path, total_files: int, every_s: float = 5.0):
        self.home, self.total, self.done, self.bytes = home, total_files, 0, 0
        self.start = self.last = time.monotonic()
        self.every_s = every_s
        self.log = get_run_logger()
        self.artifact = create_progress_artifact(progress=0.0, description="download: files")

    def update(self, name: str, result: S.DownloadResult) -> None:
        files, size = S.unit_files(self.home, result)
        self.done += files
        self.bytes += size
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


def run(
    cfg: PipelineConfig, home: Path, out: Artifact, inputs: dict[str, Artifact]
) -> dict[str, Any]:
    d = cfg.download
    S.check_corpora(d)
    # Listing first (both at once): what to fetch is decided before anything is fetched.
    pubmed_list = t.list_pubmed_files.submit(d, cfg.resolve(d.pubmed_url))
    pmc_sel = t.select_pmc_articles.submit(d, cfg.resolve(d.pmc_url), str(home))
    files, selection = pubmed_list.result(), pmc_sel.result()
    articles = selection.articles
    get_run_logger().info(
        "download: %d PubMed files, %d PMC articles selected", len(files), len(articles)
    )
    specs = S.units(d, cfg.resolve, cfg.mirror, files, articles, cfg.parse.max_record_bytes)
    results = _run_windowed(specs, home, d.max_connections * 4)
    manifest = S.collect(specs, results, selection.skipped)
    return manifests.write(out, DownloadManifest.model_validate(manifest))


def _run_windowed(specs: list[S.DownloadSpec], home: Path, window: int) -> list[S.DownloadResult]:
    """Submit the units keeping at most `window` in flight (the default thread pool is
    unbounded, and a thousand threads queueing on three connections help nobody)."""
    n_files = sum(2 * len(getattr(s, "articles", ())) or 1 for s in specs)
    progress = Progress(home, n_files)
    pending = deque(enumerate(specs))
    running: dict[PrefectFuture[Any], int] = {}
    results: dict[int, S.DownloadResult] = {}
    while pending or running:
        while pending and len(running) < window:
            i, spec = pending.popleft()
            S.forget_if_gone(spec, home)
            running[submit_unit(t.download_unit, home, spec)] = i
        fut = next(as_completed(list(running)))
        i = running.pop(fut)
        results[i] = fut.result()  # re-raises a failure, whose message names the file
        progress.update(specs[i].name, results[i])
    return [results[i] for i in range(len(specs))]
