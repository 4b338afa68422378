"""Where a variant's metrics go: JSON lines in its directory (always written; how a torchrun
job's metrics reach the parent, which replays them into MLflow), forwarded to a sink."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from mediswift.artifacts import write_atomic


class MetricSink(Protocol):
    """Where rank 0 sends metrics as they come (an MLflow `RunLogger` is one)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def flush(self) -> None: ...


class JsonlMetrics:
    """Metrics as JSON lines in the variant directory: always written, and how metrics of a
    torchrun job reach the parent process (which replays them into MLflow)."""

    def __init__(self, path: Path, resume_step: int = 0, forward: MetricSink | None = None):
        self.path, self.forward, self._rows = path, forward, []
        if path.is_file():  # a resumed run: drop what was logged after its checkpoint
            kept = [ln for ln in path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in kept if json.loads(ln)["step"] <= resume_step]
            write_atomic(path, "".join(ln + "\n" for ln in kept))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._rows.append(json.dumps({"step": step, **metrics}))
        if self.forward is not None:
            self.forward.log_metrics(metrics, step)

    def flush(self) -> None:
        if self._rows:
            with open(self.path, "a") as f:
                f.write("".join(r + "\n" for r in self._rows))
            self._rows = []
        if self.forward is not None:
            self.forward.flush()


def read_metrics(path: Path) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) rows of a variant's metrics.jsonl."""
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append((int(row.pop("step")), row))
    return rows
