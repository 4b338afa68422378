"""The temporary Prefect server of a CLI run: it dies with the run, and process-pool workers
share it. The one place that reaches into Prefect's internals (`SubprocessASGIServer`: Prefect
has no public API for either need); `tests/test_prefect_internals.py` fails when they move.

Without a configured server, Prefect starts a temporary one in a subprocess and stops it when the
run ends normally; a run killed with SIGKILL leaves it behind (about 250 MB each), and Ctrl-C at
the terminal reaches it too and kills it before the run can record its end. Here the subprocess
asks the kernel for SIGTERM when its parent thread dies (`mediswift.interrupt.die_with_parent`)
and leaves the terminal's process group.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.settings import PREFECT_API_URL, temporary_settings

from mediswift import interrupt
from mediswift.console import quiet_console
from mediswift.interrupt import die_with_parent


def tie_temporary_server_to_this_process(output: Any = None) -> bool:
    """Start Prefect's temporary server so that it dies with this process, writing its own
    output to `output` (an open file; default: this process's). Returns whether the hook is in
    place (not on other platforms, or if Prefect's internals moved)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        from prefect.server.api import server
    except ImportError:
        return False
    cls = getattr(server, "SubprocessASGIServer", None)
    original = getattr(cls, "_run_uvicorn_command", None)
    if original is None or getattr(original, "_mediswift", False):
        return original is not None

    def run_uvicorn(self: Any) -> subprocess.Popen[Any]:
        parent = os.getpid()
        popen = subprocess.Popen

        def tied(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
            kwargs.setdefault("preexec_fn", lambda: die_with_parent(parent))
            # Out of the terminal's process group: Ctrl-C stops the run, which still needs the
            # server to record how its flow run ended; the server goes when the run exits.
            kwargs.setdefault("start_new_session", True)
            if output is not None:  # the server's request errors are not the run's console
                kwargs.setdefault("stdout", output)
                kwargs.setdefault("stderr", output)
            return popen(*args, **kwargs)

        # Only this call's Popen is tied: the method looks `subprocess.Popen` up in its module.
        server.subprocess = _Shim(tied)  # type: ignore[attr-defined]
        try:
            return original(self)
        finally:
            server.subprocess = subprocess  # type: ignore[attr-defined]

    run_uvicorn._mediswift = True  # type: ignore[attr-defined]
    cls._run_uvicorn_command = run_uvicorn  # type: ignore[method-assign,union-attr]
    return True


class _Shim:
    """`subprocess` as the server module sees it during one call, with a tied `Popen`."""

    def __init__(self, popen: Any):
        self.Popen = popen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


@contextmanager
def workers_share_api() -> Iterator[None]:
    """Point worker processes at this process's temporary API server, if it uses one.

    Process-pool workers inherit the settings as environment variables; with no API URL
    configured (a local run without a server) each worker would start a temporary server of its
    own, which costs tens of seconds per worker and splits the run's records.
    """
    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer._instances.get(None)
    if server is None or not server.running:
        yield
        return
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def pool_worker_init(parent: int, quiet: bool) -> None:
    """A process-pool worker of a run: it leaves Ctrl-C to the run and dies with it
    (`mediswift.interrupt.pool_worker_init`), and, when the run's console is quiet, prints no
    tracebacks either (its task errors reach the run's log and one error line)."""
    interrupt.pool_worker_init(parent)
    if quiet:
        from prefect.logging.configuration import ensure_logging_setup

        ensure_logging_setup()  # Prefect's console handlers, made now to be quieted

        quiet_console()
