"""MLflow runs as the stages reopen them: the duration stays the work's, no step twice."""

from __future__ import annotations

import time
from pathlib import Path

from mediswift.tracking import Tracker


def test_a_reopened_run_keeps_its_end_time_and_logs_no_step_twice(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "runs", tmp_path / "mlruns")
    with tracker.run("train") as run:
        for step in (1, 2, 3):
            run.log_metrics({"loss": 1.0 / step}, step)
    ended = tracker.client.get_run(run.run_id).info.end_time
    time.sleep(0.05)
    # Reopened, as a resumed training replays the steps after its checkpoint (2 and 3 again)
    # and as a later stage adds to a finished run.
    with tracker.run("train", run_id=run.run_id) as again:
        for step in (2, 3, 4):
            again.log_metrics({"loss": 1.0 / step}, step)
    info = tracker.client.get_run(run.run_id).info
    assert info.status == "FINISHED" and info.end_time == ended
    steps = [m.step for m in tracker.client.get_metric_history(run.run_id, "loss")]
    assert sorted(steps) == [1, 2, 3, 4]
