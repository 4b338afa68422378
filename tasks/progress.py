"""Progress a person can follow: rate and ETA in the logs and a progress bar in the Prefect UI.

The library reports progress through a plain callback `(done, total)`; this module turns it into
log lines (at most one every `every_s` seconds) and a Prefect progress artifact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import PrefectFuture

from mediswift.progress import Progress, eta_text


def progress_reporter(
    label: str, total: float, unit: str = "items", every_s: float = 10.0
) -> Callable[[float, float | None], None]:
    """A `(done, total)` callback logging rate and ETA and updating a Prefect progress bar."""
    logger = get_run_logger()
    start = time.monotonic()
    last = {"t": 0.0, "finished": False}
    artifact_id = create_progress_artifact(progress=0.0, description=label)

    def report(done: float, new_total: float | None = None) -> None:
        nonlocal total
        total = new_total or total
        now = time.monotonic()
        finished = bool(total and done >= total)
        # The last step is reported by each caller that logs at it (training and validation
        # metrics): the finished line is written once.
        if finished and last["finished"] or (now - last["t"] < every_s and not finished):
            return
        last["t"], last["finished"] = now, finished
        elapsed = max(now - start, 1e-9)
        rate = done / elapsed
        pct = 100.0 * done / total if total else 0.0
        eta = eta_text((total - done) / rate) if rate > 0 and total else "?"
        logger.info(
            "%s: %.0f/%.0f %s (%.1f%%), %.1f %s/s, ETA %s",
            label,
            done,
            total,
            unit,
            pct,
            rate,
            unit,
            eta,
        )
        update_progress_artifact(artifact_id=artifact_id, progress=min(pct, 100.0))

    return report


def wait_with_progress(
    label: str, futures: list[PrefectFuture[Any]], already: int, every_s: float = 30.0
) -> None:
    """Block until every future has finished, logging `Progress.line` every `every_s` seconds
    (at the start and the end too) and moving a Prefect progress bar whenever one finishes.

    `futures` are the units still to run; `already` counts the units found done, which are done
    from the start and stay out of the rate."""
    total = already + len(futures)
    if total == 0:
        return
    finished, count = threading.Event(), _Counter()
    for future in futures:
        # Callbacks run in worker threads: they only count, the waiting thread logs.
        future.add_done_callback(lambda _f: (count.add(), finished.set()))
    report = _count_reporter(label, total, already)
    logged = -every_s  # so the first line is logged at once
    while (done := already + count.value) < total:
        now = time.monotonic()
        report(done, log=now - logged >= every_s)
        logged = now if now - logged >= every_s else logged
        finished.wait(timeout=max(0.0, every_s - (time.monotonic() - logged)))
        finished.clear()
    report(total, log=True)


class _Counter:
    """A count that worker threads bump."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


def _count_reporter(label: str, total: int, already: int) -> Callable[..., None]:
    """`report(done, log=True)`: a progress bar update per call, and a log line when `log`
    (the caller paces them)."""
    logger = get_run_logger()
    start = time.monotonic()
    artifact_id = create_progress_artifact(progress=0.0, description=f"{label}: points")

    def report(done: int, log: bool = True) -> None:
        progress = Progress(done, total, already, time.monotonic() - start)
        if log:
            logger.info("%s", progress.line(label))
        update_progress_artifact(artifact_id=artifact_id, progress=min(progress.percent, 100.0))

    return report
