"""The quiet console: the routine end of every unit's run leaves the terminal, what went wrong
and the stage progress stay (the log file keeps everything)."""

from __future__ import annotations

import io
import logging
import sys

from mediswift import console


def test_routine_run_endings_leave_the_terminal_only(monkeypatch) -> None:
    terminal, log_file = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(console, "_quiet", console._quiet)  # restored after the test
    logger = logging.getLogger("test.console.runs")
    logger.propagate = False
    on_terminal, in_file = logging.StreamHandler(sys.stderr), logging.StreamHandler(log_file)
    logger.addHandler(on_terminal)
    logger.addHandler(in_file)
    logger.setLevel(logging.INFO)
    try:
        console.quiet_console()
        logger.info("Finished in state Completed()")
        logger.info("Finished in state Cached(type=COMPLETED)")
        logger.info("finetune: 3/8 points done (ETA 2 min)")
        logger.error("a failure of the library's own")
        # A run logger's error: the command's last line says it (a child of Prefect's run
        # logger, on this test's handler only: Prefect's own handlers stay out of it).
        runs = logging.getLogger("prefect.task_runs.console-test")
        runs.propagate = False
        runs.addHandler(on_terminal)
        runs.error("Finished in state Failed('boom')")
    finally:
        logger.removeHandler(on_terminal)
        logger.removeHandler(in_file)
        logging.getLogger("prefect.task_runs.console-test").removeHandler(on_terminal)
    shown = terminal.getvalue().splitlines()
    assert shown == ["finetune: 3/8 points done (ETA 2 min)", "a failure of the library's own"]
    assert len(log_file.getvalue().splitlines()) == 4
