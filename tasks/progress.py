"""Progress a person can follow: rate and ETA in the logs and a progress bar in the Prefect UI.

The library reports progress through a plain callback `(done, total)`; this module turns it into
log lines (at most one every `every_s` seconds) and a Prefect progress artifact.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact


def _eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def progress_reporter(
    label: str, total: float, unit: str = "items", every_s: float = 10.0
) -> Callable[[float, float | None], None]:
    """A `(done, total)` callback logging rate and ETA and updating a Prefect progress bar."""
    logger = get_run_logger()
    start = time.monotonic()
    last = {"t": 0.0}
    artifact_id = create_progress_artifact(progress=0.0, description=label)

    def report(done: float, new_total: float | None = None) -> None:
        nonlocal total
        total = new_total or total
        now = time.monotonic()
        finished = total and done >= total
        if now - last["t"] < every_s and not finished:
            return
        last["t"] = now
        elapsed = max(now - start, 1e-9)
        rate = done / elapsed
        pct = 100.0 * done / total if total else 0.0
        eta = _eta((total - done) / rate) if rate > 0 and total else "?"
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
