"""The Prefect internals `flows/server.py` relies on still exist: this fails first when a
Prefect release moves them (the hooks would then silently do nothing)."""

from __future__ import annotations

import sys

from prefect.server.api import server

from flows.server import tie_temporary_server_to_this_process


def test_the_temporary_server_class_has_what_we_hook():
    cls = server.SubprocessASGIServer
    assert callable(cls._run_uvicorn_command)
    assert isinstance(cls._instances, dict)
    assert server.subprocess.Popen is not None  # looked up in the module at call time


def test_the_hook_is_in_place_on_linux():
    assert tie_temporary_server_to_this_process() is sys.platform.startswith("linux")
