"""Progress lines: rate and ETA arithmetic (library) and the waiting loop that logs them."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from mediswift.progress import Progress, eta_text


def test_eta_text_reads_minutes_and_hours():
    assert eta_text(2470) == "41m10s"
    assert eta_text(3723) == "1h02m03s"
    assert eta_text(-5) == "0m00s"


def test_line_counts_rate_and_eta():
    # 12 points in 15 minutes: 0.8 points/min, 33 left take 41m15s.
    line = Progress(done=12, total=45, already=0, elapsed_s=900).line("finetune")
    assert line == "finetune: 12/45 points done (26.7%), 0.8 points/min, ETA 41m15s"


def test_points_found_done_count_as_done_but_not_towards_the_rate():
    p = Progress(done=30, total=40, already=20, elapsed_s=600)
    assert p.percent == 75.0
    assert p.per_min == 1.0  # 10 points of this run in 10 minutes, not 30
    assert p.eta == "10m00s"


def test_no_eta_before_a_point_of_this_run_finishes_and_none_left_at_the_end():
    assert Progress(done=5, total=10, already=5, elapsed_s=60).eta == "?"
    assert Progress(done=10, total=10, already=10, elapsed_s=0).eta == "0m00s"
    assert Progress(done=0, total=0, already=0, elapsed_s=0).percent == 100.0


class _Future:
    """Enough of a Prefect future for the waiting loop: done callbacks."""

    def __init__(self) -> None:
        self.callbacks: list[Any] = []

    def add_done_callback(self, fn: Any) -> None:
        self.callbacks.append(fn)

    def finish(self) -> None:
        for fn in self.callbacks:
            fn(self)


class _Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, fmt: str, *args: Any) -> None:
        self.lines.append(fmt % args)


def test_waiting_paces_its_lines_and_fills_the_bar_per_point(
    monkeypatch: pytest.MonkeyPatch,
):
    from tasks import progress

    bar: list[float] = []
    logger = _Logger()
    monkeypatch.setattr(progress, "get_run_logger", lambda: logger)
    monkeypatch.setattr(progress, "create_progress_artifact", lambda **_: "bar")
    monkeypatch.setattr(
        progress, "update_progress_artifact", lambda **kw: bar.append(kw["progress"])
    )
    futures = [_Future(), _Future()]
    timer = threading.Timer(0.05, lambda: [f.finish() for f in futures])
    timer.start()
    progress.wait_with_progress("finetune", futures, already=2, every_s=5)  # type: ignore[arg-type]
    timer.join()
    assert logger.lines[0] == "finetune: 2/4 points done (50.0%), 0.0 points/min, ETA ?"
    assert logger.lines[-1].startswith("finetune: 4/4 points done (100.0%)")
    assert bar[0] == 50.0 and bar[-1] == 100.0
    # Points finishing within `every_s` of the last line move the bar, not the console.
    assert len(logger.lines) == 2, logger.lines


def test_a_reporter_writes_the_finished_line_once(monkeypatch: pytest.MonkeyPatch):
    from tasks import progress

    logger = _Logger()
    monkeypatch.setattr(progress, "get_run_logger", lambda: logger)
    monkeypatch.setattr(progress, "create_progress_artifact", lambda **_: "bar")
    monkeypatch.setattr(progress, "update_progress_artifact", lambda **_: None)
    report = progress.progress_reporter("pretrain tiny", 1000, unit="steps", every_s=3600)
    for step in (1, 500, 1000, 1000):  # training, then validation metrics at the last step
        report(step)
    assert [line.split(" (")[0] for line in logger.lines] == [
        "pretrain tiny: 1/1000 steps",
        "pretrain tiny: 1000/1000 steps",
    ]
