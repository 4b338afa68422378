"""The console of a CLI run: one line per error on the terminal, every traceback in a log file.

`run_log(home)` opens `<home>/logs/run-<time>-<pid>.log` and sends every log record there in
full; `quiet_console()` makes the terminal handlers print records without their tracebacks (the
orchestrator logs a failed task's traceback at ERROR, several times over as it propagates), so a
bad input reads as a few lines that each name the file or setting, and the log file has the rest.
"""

from __future__ import annotations

import copy
import errno
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def run_log(home: Path) -> Path:
    """A new log file under `<home>/logs` receiving the pipeline's and Prefect's records in full
    (at the levels their loggers already have)."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    handler = _LogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.DEBUG)
    for name in ("prefect", "mediswift", "flows", "tasks"):
        logging.getLogger(name).addHandler(handler)
    return path


def server_log(home: Path) -> Any:
    """An open file for a temporary server's own output, `<home>/logs/prefect-server.log`
    (appended; os.devnull when it cannot be opened, such as on a full disk)."""
    try:
        (home / "logs").mkdir(parents=True, exist_ok=True)
        return open(home / "logs" / "prefect-server.log", "ab")  # noqa: SIM115 (the run's life)
    except OSError:
        return open(os.devnull, "wb")  # noqa: SIM115


class _LogFile(logging.FileHandler):
    """The run's log file, which goes quiet when it cannot be written (a full disk): the
    console then gets the run's one error line, not a "Logging error" traceback per record."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        if isinstance(sys.exc_info()[1], OSError):
            self.setLevel(logging.CRITICAL + 1)  # nothing more to this file
            return
        super().handleError(record)


def _is_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return not isinstance(handler, logging.FileHandler) and stream in (sys.stderr, sys.stdout)


_quiet = False


def console_is_quiet() -> bool:
    """Whether `quiet_console` was called in this process (its workers should follow)."""
    return _quiet


RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")


class RoutineRuns(logging.Filter):
    """Drops the line Prefect logs for every task and subflow run that ends well (one per
    shard, file or grid point: hundreds in a run), and the errors each run level repeats as a
    failure travels up (the command prints the error once, as its last line). The log file
    keeps them all; stage progress, results and warnings stay on the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return not record.name.startswith(RUN_LOGGERS)
        if record.levelno > logging.INFO:
            return True
        return not str(record.msg).startswith(
            ("Finished in state Completed", "Finished in state Cached")
        )


def quiet_console() -> None:
    """Strip tracebacks from records printed on the terminal and drop the routine end-of-run
    lines of units (the log file keeps both)."""
    global _quiet
    _quiet = True
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if _is_terminal(handler) and not getattr(handler, "_mediswift_quiet", False):
                emit = handler.emit

                def quiet(record: logging.LogRecord, _emit=emit) -> None:
                    if record.exc_info or record.stack_info:
                        record = copy.copy(record)
                        record.exc_info = record.exc_text = record.stack_info = None
                    _emit(record)

                handler.emit = quiet  # type: ignore[method-assign]
                handler.addFilter(RoutineRuns())
                handler._mediswift_quiet = True  # type: ignore[attr-defined]


def log_traceback(path: Path | None, exc: BaseException) -> None:
    """Append the full traceback of `exc` to the run's log file."""
    if path is None:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(traceback.format_exception(exc)))
    except OSError:
        pass  # a full disk: the error line on the console is all there is


# How a full disk shows: OSError ENOSPC, or SQLite's own words (MLflow's and Prefect's stores).
_NO_SPACE_TEXT = ("database or disk is full", "no space left on device")


def disk_full(path: Path, margin: int = 16 << 20) -> bool:
    """Whether the file system holding `path` has less than `margin` bytes free."""
    import shutil

    try:
        return shutil.disk_usage(path).free < margin
    except OSError:
        return False


def no_space(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it came from, is a full disk."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if any(t in str(e).lower() for t in _NO_SPACE_TEXT):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def one_line(exc: BaseException) -> str:
    """The error as one line: its message, never its traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError | TypeError | AttributeError | ZeroDivisionError):
        text = f"{type(exc).__name__}: {text}"  # a bug, not bad input: say what kind
    return text
