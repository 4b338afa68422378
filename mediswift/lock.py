"""One writer per home: an advisory lock held for a run's whole life (and the same lock on a
pre-training unit's folder, held by the process that writes its checkpoints).

The lock is `flock` on `<home>/.lock`: the kernel drops it when its holder dies (kill -9
included), so a stale lock never needs cleaning up and is taken over safely by the next run. The
file's content names the holder (pid, host, start time, command) for the message a second run
prints. A second run waits for the first (the default: started together from the Prefect UI,
they then run one after another, and the later ones find the stages done) or, with `wait_s=0`,
stops at once. Locks on network file systems depend on the server: put the home on a local disk
or one whose NFS supports `flock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = ".lock"


class HomeBusy(RuntimeError):
    """Another live run holds the home."""


def holder(home: Path) -> str:
    """Who holds (or last held) the home's lock, in words."""
    try:
        info = json.loads((home / LOCK_FILE).read_text() or "{}")
    except (OSError, ValueError):
        return "another run"
    return (
        f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
        f" ({info.get('command', '?')})"
    )


@contextlib.contextmanager
def home_lock(
    home: Path,
    wait_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
    poll_s: float = 0.5,
    what: str = "home",
) -> Iterator[None]:
    """Hold the home (or another folder: `what` names it in messages) for the block. `wait_s`:
    None waits for ever, 0 fails at once."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                who = holder(home)
                if wait_s is not None and time.monotonic() - start >= wait_s:
                    raise HomeBusy(f"{what} {home} is in use by {who}") from None
                if not told and on_wait is not None:
                    on_wait(f"{what} {home} is in use by {who}: waiting for it to finish")
                    told = True
                time.sleep(poll_s)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(os.path.basename(a) for a in sys.argv[:3]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
