"""Progress arithmetic a person can follow: how many units are done, how fast, and when the rest
will be.

Pure functions, so the orchestration layer only logs what they return. Units found already done
when a run starts count as done but not towards the rate: they took no time in this run, and
counting them would promise an ETA the remaining units cannot keep.
"""

from __future__ import annotations

from dataclasses import dataclass


def eta_text(seconds: float) -> str:
    """`41m10s`, or `1h02m03s` past an hour; a negative estimate reads as nothing left."""
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@dataclass(frozen=True)
class Progress:
    """Where a run of `total` units stands `elapsed_s` seconds after it started."""

    done: int
    total: int
    already: int  # done before the run started
    elapsed_s: float

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def per_min(self) -> float:
        """Units finished by this run per minute."""
        fresh = max(self.done - self.already, 0)
        return 60.0 * fresh / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta(self) -> str:
        """Time left at this run's rate; `?` until a unit of this run has finished."""
        left = max(self.total - self.done, 0)
        if left == 0:
            return eta_text(0)
        return eta_text(60.0 * left / self.per_min) if self.per_min > 0 else "?"

    def line(self, label: str, unit: str = "points") -> str:
        """`finetune: 12/45 points done (26.7%), 0.8 points/min, ETA 41m10s`."""
        return (
            f"{label}: {self.done}/{self.total} {unit} done ({self.percent:.1f}%), "
            f"{self.per_min:.1f} {unit}/min, ETA {self.eta}"
        )
