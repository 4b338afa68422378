"""Stopping a run on request (Ctrl-C, SIGTERM, a cancel from the Prefect UI) within seconds,
keeping what is done.

A signal sets one process-wide flag. Long loops (training steps, downloads) call `check()` and
stop at their next safe point: training writes a checkpoint at the current step first, then
raises `Interrupted`. Child process groups registered here (torchrun) get SIGTERM at once. If the
process has not ended `GRACE_S` seconds after the signal, a watchdog kills the registered
groups and exits with 128 + the signal's number: nothing of a run may outlive the request.

`Interrupted` is a `KeyboardInterrupt`: orchestrators treat it as a crash, never as an error to
retry, and code that catches `Exception` lets it through.

Children that must die with this process on SIGKILL too ask the kernel for it
(`die_with_parent`, Linux `PR_SET_PDEATHSIG`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

GRACE_S = 20.0  # work that has not stopped by then is killed (the request allows 30 s)
PR_SET_PDEATHSIG = 1

_stop = threading.Event()
_lock = threading.Lock()
_signum: int | None = None
_groups: set[int] = set()  # process-group ids of children to stop with this process


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop; what was finished (and the last checkpoint) is kept."""


def requested() -> bool:
    return _stop.is_set()


def check() -> None:
    """Raise `Interrupted` if a stop was requested (call it where stopping is safe)."""
    if _stop.is_set():
        raise Interrupted(f"stopped on {signal_name()}")


def signal_name() -> str:
    return signal.Signals(_signum).name if _signum else "request"


def exit_status() -> int:
    """What the process exits with once stopped: 128 + the signal (130 for SIGINT)."""
    return 128 + (_signum or signal.SIGINT)


def request(signum: int = signal.SIGINT) -> None:
    """Ask everything of this process to stop (idempotent): set the flag, SIGTERM the children's
    process groups and start the watchdog."""
    global _signum
    with _lock:
        if _stop.is_set():
            return
        _signum = signum
        _stop.set()
        groups = list(_groups)
    _signal_groups(groups, signal.SIGTERM)
    threading.Thread(target=_watchdog, name="mediswift-stop-watchdog", daemon=True).start()


def _watchdog() -> None:
    time.sleep(GRACE_S)
    with _lock:
        groups = list(_groups)
    _signal_groups(groups, signal.SIGKILL)
    sys.stderr.write(
        f"mediswift: interrupted ({signal_name()}): work did not stop within {GRACE_S:.0f} s; "
        "exiting (finished units and the last checkpoint are kept)\n"
    )
    sys.stderr.flush()
    os._exit(exit_status())


def _signal_groups(groups: list[int], sig: int) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def reset() -> None:
    """Forget a request (tests, and a process that runs again after handling one)."""
    global _signum
    with _lock:
        _stop.clear()
        _signum = None


@contextlib.contextmanager
def stop_on_signals(*signums: int) -> Iterator[None]:
    """While inside, SIGINT and SIGTERM (or `signums`) request a stop, then reach the handler
    that was there before (Python's KeyboardInterrupt, an orchestrator's own cancellation
    handler). Only the main thread can set handlers: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    for s in signums or (signal.SIGINT, signal.SIGTERM):
        previous[s] = signal.signal(s, _chained(previous, s))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _chained(previous: dict[int, Any], signum: int) -> Any:
    def handler(sig: int, frame: Any) -> None:
        request(sig)
        before = previous.get(signum)
        if callable(before):
            before(sig, frame)
        elif before != signal.SIG_IGN:  # the default action: stop this thread's work too
            raise Interrupted(f"stopped on {signal.Signals(sig).name}")

    return handler


# --- Children --------------------------------------------------------------------------------


def die_with_parent(parent: int, sig: int = signal.SIGTERM) -> None:
    """In a child: ask the kernel for `sig` when the parent dies (Linux; elsewhere a no-op), and
    exit if the parent `parent` is already gone (it may have died before the request)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def pool_worker_init(parent: int) -> None:
    """A process-pool worker: the parent alone decides on Ctrl-C (the terminal sends SIGINT to
    the whole foreground group), and the worker exits within a second of the parent's death.

    Not `die_with_parent`: the kernel's signal follows the parent *thread*, and a pool made in
    a worker thread outlives it; a worker killed while it holds the pool's queue lock would
    hang the pool's shutdown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_without, args=(parent,), daemon=True).start()


def _exit_without(parent: int, every_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(1)


def run_child(cmd: list[str], timeout: float | None = None, poll_s: float = 0.5) -> int:
    """Run `cmd` to its end in a process group of its own, tied to this process: it dies with
    it (SIGKILL included), gets SIGTERM when a stop is requested (then `Interrupted` is raised
    here), and is killed whole on a timeout. Returns the exit status."""
    parent = os.getpid()
    proc = subprocess.Popen(
        cmd,
        start_new_session=True,  # the terminal's Ctrl-C reaches us; we stop the group
        preexec_fn=lambda: die_with_parent(parent),
    )
    with _lock:
        _groups.add(proc.pid)
    if _stop.is_set():  # requested while starting: the group was not known then
        _signal_groups([proc.pid], signal.SIGTERM)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            try:
                status = proc.wait(timeout=poll_s)
                break
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() > deadline:
                    _signal_groups([proc.pid], signal.SIGKILL)
                    proc.wait()
                    raise
        check()  # stopped on request: say so, not "exited with -15"
        return status
    finally:
        _signal_groups([proc.pid], signal.SIGKILL)  # whatever of the group is left
        with _lock:
            _groups.discard(proc.pid)
