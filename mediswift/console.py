"""The console of a CLI run: one line per error on the terminal, every traceback in a log file.

`run_log(home)` opens `<home>/logs/run-<time>-<pid>.log` and sends every log record there in
full; `quiet_console()` makes the terminal handlers print records without their tracebacks (the
orchestrator logs a failed task's traceback at ERROR, several times over as it propagates), so a
bad input reads as a few lines that each name the file or setting, and the log file has the rest.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
import traceback
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def run_log(home: Path) -> Path:
    """A new log file under `<home>/logs` receiving the pipeline's and Prefect's records in full
    (at the levels their loggers already have)."""
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT))
    handler.setLevel(logging.DEBUG)
    for name in ("prefect", "mediswift", "flows", "tasks"):
        logging.getLogger(name).addHandler(handler)
    return path


def _is_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    return not isinstance(handler, logging.FileHandler) and stream in (sys.stderr, sys.stdout)


def quiet_console() -> None:
    """Strip tracebacks from records printed on the terminal (the log file keeps them)."""
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
                handler._mediswift_quiet = True  # type: ignore[attr-defined]


def log_traceback(path: Path | None, exc: BaseException) -> None:
    """Append the full traceback of `exc` to the run's log file."""
    if path is None:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(traceback.format_exception(exc)))


def one_line(exc: BaseException) -> str:
    """The error as one line: its message, never its traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, KeyError | TypeError | AttributeError | ZeroDivisionError):
        text = f"{type(exc).__name__}: {text}"  # a bug, not bad input: say what kind
    return text
